"""`foundry-inference up` end to end, with real processes: the control plane, the operator and the node agent, the
iris sample built by scikit-learn + skl2onnx, the real predictive server behind a real nginx TLS sidecar (the client
checks the certificate against <data-dir>/tls/ca.crt), and a real OCI registry (Debian's docker-registry) for
bring-your-own models pushed with the `oras` Python package.

Covered: the walk-through (list, deploy the sample, keys, predict, rotate within 5 s, delete -> processes gone),
a real Foundry entry failing with a clear message where Azure cannot be reached, a killed model server restarted
by the agent, a corrupted cached sample detected by its digest and rebuilt, BYO through the API (SSRF guard on,
the loopback registry allow-listed), and a restart of `up` that brings a deployment back with the same keys (its
fetched model, corrupted while `up` was down, detected by digest and fetched again).
"""
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.quickstart_walkthrough import IRIS_ROWS, Platform, processes_under, rotation_check, wait_until
from tests.support import registry as registry_support
from tests.support.procs import Cli, free_port, wait_http
from tests.support.require import require_module, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module", autouse=True)
def _prerequisites():
    require_tool("nginx", "apt-get install nginx-light")
    for module in ("sklearn", "skl2onnx"):
        require_module(module, "the samples extra: pip install -e .[samples]")


class Up:
    """One `foundry-inference up` on a data dir, with a Platform client."""

    def __init__(self, tmp, data, env, name="up", args=()):
        self.port = free_port()
        self.data = data
        self.cli = Cli("up", "--data-dir", str(data), "--port", str(self.port), *args, env=env,
                       log_path=tmp / f"{name}.log")
        wait_http(f"http://127.0.0.1:{self.port}/readyz", timeout=60, proc=self.cli.proc)
        wait_until(lambda: (data / "admin-key").exists(), 10, "the admin key")
        self.platform = Platform(f"http://127.0.0.1:{self.port}", data)

    def stop(self):
        rc = self.cli.stop()
        assert rc == 0, self.cli.log()[-3000:]
        return rc


@pytest.fixture(scope="module")
def registry():
    registry_support.require_registry()
    with registry_support.DockerRegistry() as reg:       # anonymous pull: no API to create a credentials Secret
        yield reg


@pytest.fixture(scope="module")
def samples_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("samples-cache")


@pytest.fixture(scope="module")
def up(tmp_path_factory, registry, samples_cache):
    tmp = tmp_path_factory.mktemp("up")
    # no chat model builder in this installation: deploying the SmolLM2 sample must fail clearly
    env = {"FOUNDRY_SAMPLES": "iris-classifier", "FOUNDRY_SAMPLES_CACHE": str(samples_cache),
           "FOUNDRY_LOG_LEVEL": "info", "FOUNDRY_CHAT_BUILD_SCRIPT": str(tmp / "missing" / "build_chat_model.py")}
    env.update(FOUNDRY_REGISTRY_ALLOWLIST=registry.address, FOUNDRY_FETCH_INSECURE="1")
    run = Up(tmp, tmp / "data", env)
    try:
        yield run
    finally:
        run.stop()
        assert processes_under(tmp / "data") == [], "processes outlived `up`"


def test_first_start_prepares_the_iris_sample_with_progress(up, samples_cache):
    wait_until(lambda: '"sample ready"' in up.cli.log(), 60, "the iris sample to be prepared")
    log = up.cli.log()
    assert "iris-classifier: training" in log or "iris-classifier: cached" in log
    assert any(p.name.startswith("iris-classifier-") and (p / "model.onnx").is_file()
               for p in samples_cache.iterdir())
    assert '"embedded mode starting"' in log and "admin-key" in log


def test_walkthrough_deploy_predict_rotate_delete(up):
    p = up.platform
    samples = {m["alias"]: m for m in p.models(publisher="foundry-inference samples")}
    assert {"iris-classifier", "smollm2-135m-instruct", "whisper-tiny-en"} <= set(samples)
    assert samples["iris-classifier"]["task"] == "classification"
    assert samples["iris-classifier"]["source"] == "foundry-local"

    p.deploy("iris", {"catalog": {"name": "iris-classifier"}})
    status = p.wait_state("iris", timeout=180)
    endpoint = status["internalEndpoint"]
    assert endpoint.startswith("https://127.0.0.1:")
    assert status["resolvedModel"]["name"] == "iris-classifier-generic-cpu:1"
    # the spec and the status say what runs: the predictive server on plain onnxruntime
    assert p.deployment("iris")["spec"]["workloadType"] == "predictive"
    resolved = status["resolvedModel"]
    assert resolved["workloadType"] == "predictive" and resolved["runtime"] == "onnxruntime"
    assert (up.data / "tls" / "ca.crt").is_file()

    primary, secondary = p.keys("iris")
    assert primary != secondary
    outputs = p.predict(endpoint, primary)
    assert outputs["label_0"] == [0, 1, 2]
    assert len(outputs["probabilities_1"]) == 3 and abs(sum(outputs["probabilities_1"][0]) - 1) < 1e-4
    assert p.predict(endpoint, secondary)["label_0"] == [0, 1, 2]
    assert p.predict_raw(endpoint, "not-a-key", IRIS_ROWS).status_code == 401
    assert p.predict_raw(endpoint, None, IRIS_ROWS).status_code == 401

    # the certificate is really checked: without the CA the client refuses the endpoint
    import requests
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{endpoint}/health", timeout=5)

    assert rotation_check(p, "iris", endpoint, which="primary") <= 5.0
    assert rotation_check(p, "iris", endpoint, which="secondary") <= 5.0

    workload = p.workload_dir("iris")
    assert processes_under(workload), "no model-server/nginx processes for the deployment"
    p.delete("iris")
    wait_until(lambda: not processes_under(workload), 30, "the deployment's processes to stop")
    wait_until(lambda: p.gone("iris"), 30, "the deployment to be deleted")
    assert not workload.exists(), "keys and TLS keys linger on disk"


def test_real_foundry_entry_without_network_fails_with_a_clear_message(up):
    """The Azure model registry cannot be reached from a test machine: the deployment says so (docs/catalog.md)."""
    p = up.platform
    p.deploy("phi", {"catalog": {"name": "phi-4-mini"}})
    status = p.wait_state("phi", "Error", timeout=60, fail_on_error=False)
    assert "azureml://registries/azureml/models/Phi-4-mini-instruct-generic-cpu/versions/5" in status["message"]
    assert "no model registry region answered" in status["message"]
    p.delete("phi")
    wait_until(lambda: p.gone("phi"), 30, "phi to be deleted")


def test_a_sample_that_cannot_be_prepared_is_an_error_naming_the_cause(up):
    p = up.platform
    p.deploy("chat", {"catalog": {"name": "smollm2-135m-instruct"}})
    status = p.wait_state("chat", "Error", timeout=60, fail_on_error=False)
    assert "model fetch failed" in status["message"]
    assert "smollm2-135m-instruct sample is not available" in status["message"]
    p.delete("chat")
    wait_until(lambda: p.gone("chat"), 30, "chat to be deleted")


def _model_server_pid(workload):
    for pid in processes_under(workload):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"predictive-server" in cmd:
            return pid
    return None


def test_killed_model_server_is_restarted_by_the_agent(up):
    p = up.platform
    p.deploy("iris-kill", {"catalog": {"name": "iris-classifier"}})
    endpoint = p.wait_state("iris-kill", timeout=180)["internalEndpoint"]
    key = p.keys("iris-kill")[0]
    workload = p.workload_dir("iris-kill")
    pid = wait_until(lambda: _model_server_pid(workload), 10, "the model server process")
    os.kill(pid, signal.SIGKILL)
    new_pid = wait_until(lambda: (_model_server_pid(workload) or pid) != pid and _model_server_pid(workload),
                         30, "the agent to restart the model server")
    assert new_pid != pid
    log = (workload / "logs" / "model-server-0.log").read_text()
    assert log.count("start model-server-0") >= 2
    status = p.wait_state("iris-kill", timeout=60)
    assert status["readyReplicas"] == 1
    restarted = wait_until(lambda: next((c for c in p.deployment("iris-kill")["status"]["conditions"]
                                         if c["type"] == "ModelServerRestarted"), None), 30,
                           "the restart to show in the deployment's status")
    assert restarted["status"] == "True" and "restarted 1 time(s), last killed by SIGKILL" in restarted["message"]
    wait_until(lambda: p.predict_raw(endpoint, key, IRIS_ROWS).status_code == 200, 30, "predictions again")
    p.delete("iris-kill")
    wait_until(lambda: not processes_under(workload), 30, "the processes to stop")


def test_corrupted_cached_sample_is_detected_by_digest_and_rebuilt(up, samples_cache):
    wait_until(lambda: any(samples_cache.glob("iris-classifier-*/model.onnx")), 60, "the cached sample")
    cached = next(samples_cache.glob("iris-classifier-*/model.onnx"))
    cached.write_bytes(b"\0" * cached.stat().st_size)          # same size, wrong content
    p = up.platform
    p.deploy("iris-corrupt", {"catalog": {"name": "iris-classifier"}})
    endpoint = p.wait_state("iris-corrupt", timeout=180)["internalEndpoint"]
    fetch_log = (p.workload_dir("iris-corrupt") / "logs" / "model-fetcher.log").read_text()
    assert "does not match its digest" in fetch_log and "preparing it again" in fetch_log
    assert p.predict(endpoint, p.keys("iris-corrupt")[0])["label_0"] == [0, 1, 2]
    rebuilt = next(samples_cache.glob("iris-classifier-*/model.onnx"))
    assert rebuilt.read_bytes() != b"\0" * rebuilt.stat().st_size
    p.delete("iris-corrupt")
    wait_until(lambda: p.gone("iris-corrupt"), 30, "iris-corrupt to be deleted")


def test_bring_your_own_model_from_a_real_oci_registry(up, registry, samples_cache):
    from foundry_inference import samples
    model = (samples.prepare("iris-classifier", progress=lambda m: None) / "model.onnx").read_bytes()
    registry.push_model({"model.onnx": model}, "models/iris-byo", "v1")
    manifest = registry.manifest("models/iris-byo", "v1")
    assert manifest["layers"][0]["annotations"]["org.opencontainers.image.title"] == "model.tar.gz"

    p = up.platform
    ns = "foundry-local-operator"
    body = {"name": "iris-byo", "displayName": "Iris (BYO)", "source": {"type": "custom", "custom": {
        "registry": registry.address, "repository": "models/iris-byo", "tag": "v1"}},
        "capabilities": {"task": "classification"}}
    # the SSRF guard stays on: a loopback registry that is not allow-listed is refused
    other = dict(body, name="iris-other", source={"type": "custom", "custom": {
        "registry": f"127.0.0.1:{free_port()}", "repository": "models/iris-byo", "tag": "v1"}})
    p.api("POST", "/models", expect=(400,), json=other)
    p.api("POST", "/models", expect=(201,), json=body)
    assert any(m["id"] == "iris-byo" for m in p.models(source="custom"))

    p.deploy("iris-byo", {"ref": "iris-byo"}, namespace=ns, workloadType="predictive")
    status = p.wait_state("iris-byo", namespace=ns, timeout=180)
    fetch_log = (p.workload_dir("iris-byo", ns) / "logs" / "model-fetcher.log").read_text()
    assert f"pulling {registry.address}/models/iris-byo:v1" in fetch_log and "100%" in fetch_log
    outputs = p.predict(status["internalEndpoint"], p.keys("iris-byo", ns)[0])
    assert outputs["label_0"] == [0, 1, 2]
    p.delete("iris-byo", ns)
    wait_until(lambda: p.gone("iris-byo", ns), 30, "iris-byo to be deleted")


def test_restart_keeps_deployments_and_keys_and_refetches_a_corrupted_model(tmp_path, samples_cache):
    env = {"FOUNDRY_SAMPLES": "iris-classifier", "FOUNDRY_SAMPLES_CACHE": str(samples_cache)}
    data = tmp_path / "data"
    first = Up(tmp_path, data, env, "up1")
    try:
        p = first.platform
        p.deploy("iris", {"catalog": {"name": "iris-classifier"}})
        endpoint = p.wait_state("iris", timeout=180)["internalEndpoint"]
        keys = p.keys("iris")
        assert p.predict(endpoint, keys[0])["label_0"] == [0, 1, 2]
    finally:
        first.stop()
    assert processes_under(data) == [], "processes outlived `up` after Ctrl-C"
    admin_key = (data / "admin-key").read_text()
    # corrupt the deployment's fetched copy while `up` is down: the next start detects it by digest and re-fetches
    fetched = next((data / "workloads" / "default" / "iris" / "volumes").rglob("model.onnx"))
    fetched.write_bytes(fetched.read_bytes()[:-16] + b"\0" * 16)
    assert oct((data / "admin-key").stat().st_mode & 0o777) == "0o600"

    second = Up(tmp_path, data, env, "up2")
    try:
        p = second.platform
        assert (data / "admin-key").read_text() == admin_key
        # the status the previous run left is void: not Running before this run's processes answer, and a
        # client that waits for Running and then calls is served at once (no connection refused)
        first_seen = p.deployment("iris")["status"]
        assert first_seen["state"] == "Creating" and "the node restarted" in first_seen["message"], first_seen
        status = p.wait_state("iris", timeout=180)
        assert p.keys("iris") == keys
        assert p.predict_raw(status["internalEndpoint"], keys[0], IRIS_ROWS).status_code == 200
        status = p.wait_state("iris", timeout=60)
        assert p.predict(status["internalEndpoint"], keys[0])["label_0"] == [0, 1, 2]
        assert p.predict(status["internalEndpoint"], keys[1])["label_0"] == [0, 1, 2]
        fetch_log = Path(data / "workloads" / "default" / "iris" / "logs" / "model-fetcher.log").read_text()
        assert "model.onnx does not match its digest" in fetch_log and "fetching it again" in fetch_log
    finally:
        second.stop()
    assert processes_under(data) == []
