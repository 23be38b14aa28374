"""`python -m foundry_inference.apps.predictive.server` as a real process: readiness, graceful SIGTERM, several
workers sharing the port, and the exit statuses of unservable configurations."""
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.support import models
from tests.support.procs import free_port, wait_http
from tests.unit.predictive.harness import body_for, outputs_of

pytestmark = pytest.mark.integration


def start(env_extra, *args, cli=False):
    env = {**os.environ, "FOUNDRY_AUTH_MODE": "none", "FOUNDRY_PREDICTIVE_HOST": "127.0.0.1", **env_extra}
    command = ["foundry_inference.cli", "predictive-server"] if cli else ["foundry_inference.apps.predictive.server"]
    return subprocess.Popen([sys.executable, "-m", *command, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        return proc.wait(20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("workers,cli", [(1, True), (2, False)], ids=["cli-1-worker", "module-2-workers"])
def test_serves_then_stops_on_sigterm(workers, cli):
    port = free_port()
    proc = start({"FOUNDRY_MODEL_PATH": models.iris_logreg().path, "FOUNDRY_PREDICTIVE_WORKERS": str(workers)},
                 "--port", str(port), cli=cli)
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", timeout=60, proc=proc)
        deadline = time.monotonic() + 60
        for _ in range(10):     # with two workers, both take connections from the shared socket
            while True:         # a worker still loading its model answers 503 until it is ready
                answer = requests.post(f"http://127.0.0.1:{port}/v1/predict",
                                       json=body_for([[6.7, 3.0, 5.2, 2.3]]), timeout=10)
                if answer.status_code != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert answer.status_code == 200, answer.text
            assert outputs_of(answer.json())["label_0"] == [2]
    finally:
        code = stop(proc)
    assert code == 0, proc.stdout.read().decode()
    time.sleep(0.2)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_a_corrupt_model_exits_1_with_the_reason(tmp_path):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    port = free_port()
    proc = start({"FOUNDRY_MODEL_PATH": str(tmp_path)}, "--port", str(port))
    code = proc.wait(60)
    output = proc.stdout.read().decode()
    assert code == 1
    assert "cannot serve the model" in output


def test_bad_settings_exit_2_with_the_variable_named():
    proc = start({"FOUNDRY_MODEL_PATH": "/nonexistent/model.onnx"})
    assert proc.wait(30) == 2
    assert "FOUNDRY_MODEL_PATH" in proc.stdout.read().decode()
    proc = start({"FOUNDRY_MODEL_PATH": models.iris_logreg().path, "FOUNDRY_QUEUE_DEPTH": "lots"})
    assert proc.wait(30) == 2
    assert "FOUNDRY_QUEUE_DEPTH: expected an integer" in proc.stdout.read().decode()
