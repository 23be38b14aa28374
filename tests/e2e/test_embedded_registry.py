"""Bring-your-own models from a real OCI registry (Debian's docker-registry on loopback, htpasswd basic auth) pushed
with the `oras` Python package: the fetcher's credentials and digest checks for real, and the embedded operator +
node agent turning a wrong password into state Error naming the cause, then recovering once the Secret is fixed
(docs/api.md, decision 12), with the real predictive server behind the real nginx sidecar.
"""
import base64
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from foundry_inference.operator import fetch
from tests.e2e.quickstart_walkthrough import IRIS_ROWS, processes_under, wait_until
from tests.support import registry as registry_support
from tests.support.procs import CLI
from tests.support.require import require_module

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NS = "team-byo"


@pytest.fixture(scope="module")
def reg():
    registry_support.require_registry()
    with registry_support.DockerRegistry(username="puller", password="s3cret") as registry:
        yield registry


@pytest.fixture(scope="module")
def iris_bytes(tmp_path_factory):
    require_module("skl2onnx", "pip install -e .[samples]")
    from foundry_inference import samples
    saved = os.environ.get("FOUNDRY_SAMPLES_CACHE")
    os.environ["FOUNDRY_SAMPLES_CACHE"] = str(tmp_path_factory.mktemp("samples"))
    try:
        return (samples.prepare("iris-classifier", progress=lambda m: None) / "model.onnx").read_bytes()
    finally:
        if saved is None:
            os.environ.pop("FOUNDRY_SAMPLES_CACHE", None)
        else:
            os.environ["FOUNDRY_SAMPLES_CACHE"] = saved


def registry_secret(data_dir, password):
    done = subprocess.run([CLI, "registry-secret", "registry-creds", "-n", NS, "-u", "puller", "--password-stdin",
                           "--data-dir", str(data_dir)], input=password + "\n", capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr


def _artifact(reg, repo, tag="v1"):
    return {"type": "oci", "registry": reg.address, "repository": repo, "tag": tag}


def test_fetch_with_credentials_verifies_and_unpacks(reg, iris_bytes, tmp_path, capfd):
    reg.push_model({"model.onnx": iris_bytes, "labels.txt": b"setosa\nversicolor\nvirginica\n"}, "byo/iris")
    dest = tmp_path / "model"
    fetch.fetch(_artifact(reg, "byo/iris"), str(dest), "puller", "s3cret", allow_private=True, insecure=True)
    assert (dest / "model.onnx").read_bytes() == iris_bytes
    assert (dest / "labels.txt").is_file() and (dest / fetch.MARKER).is_file()
    assert "100%" in capfd.readouterr().err
    # a second fetch of the same artifact reuses what is there
    fetch.fetch(_artifact(reg, "byo/iris"), str(dest), "puller", "s3cret", allow_private=True, insecure=True)
    assert "model already present (digests verified)" in capfd.readouterr().err
    # a fetched copy corrupted on disk is detected by its recorded digest and pulled again
    (dest / "model.onnx").write_bytes(b"garbage")
    fetch.fetch(_artifact(reg, "byo/iris"), str(dest), "puller", "s3cret", allow_private=True, insecure=True)
    assert "model.onnx does not match its digest" in capfd.readouterr().err
    assert (dest / "model.onnx").read_bytes() == iris_bytes


def test_fetch_without_or_with_wrong_credentials_fails_clearly(reg, iris_bytes, tmp_path):
    reg.push_model({"model.onnx": iris_bytes}, "byo/private")
    with pytest.raises(fetch.FetchError, match="requires credentials"):
        fetch.fetch(_artifact(reg, "byo/private"), str(tmp_path / "a"), allow_private=True, insecure=True)
    with pytest.raises(fetch.FetchError, match="HTTP 401"):
        fetch.fetch(_artifact(reg, "byo/private"), str(tmp_path / "b"), "puller", "wrong", allow_private=True,
                    insecure=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fetch-")], "a staging folder was left"


def test_ssrf_guard_refuses_a_loopback_registry_unless_allow_listed(reg, iris_bytes, tmp_path, monkeypatch):
    monkeypatch.delenv("FOUNDRY_REGISTRY_ALLOWLIST", raising=False)
    with pytest.raises(fetch.FetchError, match="internal address"):
        fetch.fetch(_artifact(reg, "byo/iris"), str(tmp_path / "x"), "puller", "s3cret", insecure=True)
    monkeypatch.setenv("FOUNDRY_REGISTRY_ALLOWLIST", reg.address)
    reg.push_model({"model.onnx": iris_bytes}, "byo/iris")
    fetch.fetch(_artifact(reg, "byo/iris"), str(tmp_path / "y"), "puller", "s3cret", insecure=True)
    assert (tmp_path / "y" / "model.onnx").is_file()


def test_a_blob_corrupted_in_the_registry_is_refused_by_digest_and_never_half_used(reg, iris_bytes, tmp_path):
    reg.push_model({"model.onnx": iris_bytes + b"-corrupt-me"}, "byo/corrupt")
    layer = reg.manifest("byo/corrupt", "v1")["layers"][0]["digest"].split(":")[1]
    blob = next(Path(reg.dir, "data").rglob(f"blobs/sha256/{layer[:2]}/{layer}/data"))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    dest = tmp_path / "model"
    with pytest.raises(fetch.FetchError, match="digest mismatch"):
        fetch.fetch(_artifact(reg, "byo/corrupt"), str(dest), "puller", "s3cret", allow_private=True, insecure=True)
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fetch-")]


@pytest.mark.usefixtures("nginx")
def test_embedded_byo_with_a_wrong_password_is_an_error_then_recovers(reg, iris_bytes, tmp_path, monkeypatch):
    from foundry_inference.operator.main import run_embedded
    from foundry_inference.store.embedded import EmbeddedStore
    from tests.unit.operator.factories import decoded, mdep, settings

    reg.push_model({"model.onnx": iris_bytes}, "byo/iris-agent")
    monkeypatch.setenv("FOUNDRY_REGISTRY_ALLOWLIST", reg.address)
    monkeypatch.setenv("FOUNDRY_FETCH_INSECURE", "1")
    data = tmp_path / "data"
    store = EmbeddedStore.with_chart_crds(data / "store.db")
    stop = threading.Event()
    thread = threading.Thread(target=run_embedded, args=(store, data, stop, settings(NS)), daemon=True)
    thread.start()

    def status():
        return store.get("ModelDeployment", NS, "iris").get("status") or {}
    try:
        registry_secret(data, "wrong")                   # as a user would: the CLI, while the platform runs
        store.create(mdep("iris", NS, workloadType="predictive", port=8000, model={"custom": {
            "registry": reg.address, "repository": "byo/iris-agent", "tag": "v1",
            "credentials": {"secretRef": {"name": "registry-creds"}}}}))
        wait_until(lambda: status().get("state") == "Error", 120, "state Error")
        assert "model fetch failed" in status()["message"] and "401" in status()["message"]
        registry_secret(data, "s3cret")
        wait_until(lambda: status().get("state") == "Running", 120, "recovery to Running")
        endpoint = status()["internalEndpoint"]
        key = decoded(store.get("Secret", NS, "iris-api-keys"), "primary-key")
        body = {"items": [{"content_type": "application/json", "encoder": "base64",
                           "data": base64.b64encode(json.dumps(IRIS_ROWS).encode()).decode()}]}
        resp = requests.post(f"{endpoint}/v1/predict", json=body, headers={"api-key": key},
                             verify=str(data / "tls" / "ca.crt"), timeout=10)
        assert resp.status_code == 200, resp.text
        assert json.loads(base64.b64decode(resp.json()["items"][0]["data"]))["label_0"] == [0, 1, 2]
    finally:
        stop.set()
        thread.join(60)
        store.close()
    assert processes_under(data) == []
