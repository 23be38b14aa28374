"""The shared model cache of `foundry-inference up` (fault case: the disk cache limit is filled), with real
processes: `up --model-cache-limit 1Mi`, a real OCI registry (Debian's docker-registry, models pushed with the `oras`
Python package), the node agent's fetchers sharing `<data-dir>/cache`.

- A model larger than the limit: the deployment reaches state Error through the control plane API with a message
  saying how much it needs and what the limit is, fast (no download), and the cache stays empty.
- Two deployments of one artifact that fits: one download; the other fetcher logs `cached`.
"""
import os

import pytest

from tests.e2e.quickstart_walkthrough import processes_under, wait_until
from tests.e2e.test_embedded_up import Up
from tests.support import registry as registry_support

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NS = "foundry-local-operator"          # where models registered through the API are deployed by ref


@pytest.fixture(scope="module")
def registry():
    registry_support.require_registry()
    with registry_support.DockerRegistry() as reg:       # anonymous pull: no API to create a credentials Secret
        yield reg


@pytest.fixture(scope="module")
def up(tmp_path_factory, registry):
    tmp = tmp_path_factory.mktemp("up-cache")
    env = {"FOUNDRY_SAMPLES": "none", "FOUNDRY_LOG_LEVEL": "info", "FOUNDRY_REGISTRY_ALLOWLIST": registry.address,
           "FOUNDRY_FETCH_INSECURE": "1"}
    run = Up(tmp, tmp / "data", env, args=("--model-cache-limit", "1Mi"))
    try:
        yield run
    finally:
        run.stop()
        assert processes_under(tmp / "data") == [], "processes outlived `up`"


def register(platform, registry, name, size):
    registry.push_model({"model.onnx": os.urandom(size)}, f"models/{name}", "v1")
    platform.api("POST", "/models", expect=(201,), json={
        "name": name, "displayName": name, "capabilities": {"task": "classification"},
        "source": {"type": "custom", "custom": {"registry": registry.address, "repository": f"models/{name}",
                                                "tag": "v1"}}})


def cache_files(data):
    return [p for sub in ("blobs", "partial") for p in (data / "cache" / sub).rglob("*") if p.is_file()]


def test_a_model_larger_than_the_cache_limit_fails_clearly_through_the_api(up, registry):
    p = up.platform
    assert "model_cache_limit" in up.cli.log() and "1048576" in up.cli.log()
    register(p, registry, "too-big", 2 << 20)
    p.deploy("too-big", {"ref": "too-big"}, namespace=NS, workloadType="predictive")
    status = p.wait_state("too-big", "Error", namespace=NS, timeout=90, fail_on_error=False)
    message = status["message"]
    assert "model fetch failed" in message
    assert "model needs 2.0 MiB" in message and "but the model cache limit is 1.0 MiB (1048576 bytes)" in message
    fetch_log = (p.workload_dir("too-big", NS) / "logs" / "model-fetcher.log").read_text()
    assert "model.tar.gz:" not in fetch_log, "the download started anyway"
    assert cache_files(up.data) == []
    p.delete("too-big", NS)
    wait_until(lambda: p.gone("too-big", NS), 30, "too-big to be deleted")


def test_two_deployments_of_one_artifact_share_one_download(up, registry):
    p = up.platform
    register(p, registry, "shared", 200 << 10)
    for name in ("shared-a", "shared-b"):
        p.deploy(name, {"ref": "shared"}, namespace=NS, workloadType="predictive")
    logs = [p.workload_dir(name, NS) / "logs" / "model-fetcher.log" for name in ("shared-a", "shared-b")]
    wait_until(lambda: all(log.exists() and "model ready" in log.read_text() for log in logs), 90,
               "both fetchers to finish")
    texts = [log.read_text() for log in logs]
    assert sum("model.tar.gz: cached (sha256:" in text for text in texts) == 1, texts
    assert sum("model.tar.gz: 100%" in text for text in texts) == 1, texts
    assert [f.parent.name for f in cache_files(up.data)] == ["sha256"] and len(cache_files(up.data)) == 1
    for name in ("shared-a", "shared-b"):        # random bytes are no ONNX model: only the fetch mattered here
        p.delete(name, NS)
    for name in ("shared-a", "shared-b"):
        wait_until(lambda name=name: p.gone(name, NS), 30, f"{name} to be deleted")
