"""`foundry-inference up` runs on a machine with no cluster, answers health checks, and stops cleanly on Ctrl-C."""
import json
import time

import pytest

from tests.support.procs import Cli, free_port, wait_http

pytestmark = pytest.mark.e2e


def test_up_serves_health_and_stops_on_ctrl_c_keeping_state(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    cli = Cli("up", "--data-dir", str(data), "--port", str(port), log_path=tmp_path / "up.log")
    try:
        assert wait_http(f"http://127.0.0.1:{port}/healthz", proc=cli.proc).json() == {"status": "healthy"}
        ready = wait_http(f"http://127.0.0.1:{port}/readyz", proc=cli.proc)
        assert ready.json() == {"status": "ready", "kubernetes": "connected"}
    finally:
        rc = cli.stop()
    assert rc == 0, cli.log()
    assert (data / "store.db").exists()
    assert '"embedded mode starting"' in cli.log()

    again = Cli("up", "--data-dir", str(data), "--port", str(port), log_path=tmp_path / "up2.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=again.proc)
    finally:
        assert again.stop() == 0


def test_attack_up_without_nginx_refuses_plain_http_unless_asked(tmp_path):
    port = free_port()
    no_nginx = {"PATH": str(tmp_path / "empty-bin"), "FOUNDRY_SAMPLES": "none"}      # nginx cannot be found
    cli = Cli("up", "--data-dir", str(tmp_path / "a"), "--port", str(port), env=no_nginx, log_path=tmp_path / "a.log")
    try:
        rc = cli.proc.wait(60)
    finally:
        cli.stop()
    assert rc == 2 and "nginx is not installed" in cli.log() and "--allow-plain-http" in cli.log(), cli.log()
    assert not (tmp_path / "a" / "store.db").exists()                  # refused before anything started

    opted_in = Cli("up", "--data-dir", str(tmp_path / "b"), "--port", str(port), "--allow-plain-http", env=no_nginx,
                   log_path=tmp_path / "b.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=opted_in.proc)
    finally:
        assert opted_in.stop() == 0
    assert "plain HTTP" in opted_in.log()                                # and it says so


def test_unknown_path_is_a_json_404(tmp_path):
    port = free_port()
    cli = Cli("up", "--data-dir", str(tmp_path), "--port", str(port))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=cli.proc)
        import requests
        resp = requests.get(f"http://127.0.0.1:{port}/nope/../../etc/passwd", timeout=5)
        assert resp.status_code == 404
        assert resp.json()["error"] == "NotFound"
    finally:
        cli.stop()


def test_oversized_body_is_refused_before_it_is_read(tmp_path):
    import requests
    port = free_port()
    cli = Cli("up", "--data-dir", str(tmp_path), "--port", str(port))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=cli.proc)
        key = (tmp_path / "admin-key").read_text().strip()
        resp = requests.post(f"http://127.0.0.1:{port}/api/v1/namespaces/default/deployments", data=b"x" * (3 << 20),
                             headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                             timeout=10)
        assert resp.status_code == 413 and resp.json()["error"] == "PayloadTooLarge"
        ok = requests.get(f"http://127.0.0.1:{port}/api/v1/models", headers={"api-key": key}, timeout=10)
        assert ok.status_code == 200
    finally:
        cli.stop()


def test_deploy_sample_ends_with_the_sample_answering_over_tls(tmp_path):
    port = free_port()
    cli = Cli("up", "--data-dir", str(tmp_path), "--port", str(port), "--deploy-sample", "iris-classifier",
              log_path=tmp_path / "up.log", env={"FOUNDRY_SAMPLES": "iris-classifier"})
    try:
        deadline = time.monotonic() + 300
        while '"sample deployed and answering"' not in cli.log():
            assert cli.proc.poll() is None, cli.log()
            assert time.monotonic() < deadline, cli.log()[-3000:]
            time.sleep(0.5)
        line = next(json.loads(x) for x in cli.log().splitlines() if '"sample deployed and answering"' in x)
        assert line["output"]["label_0"] == [0] and line["endpoint"].startswith("https://127.0.0.1:")
    finally:
        assert cli.stop() == 0
