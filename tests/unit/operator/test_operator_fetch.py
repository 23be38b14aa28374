"""The model fetcher against a loopback OCI registry: token auth, digest check, safe unpacking, idempotence, and the
failures a deployment reports (bad credentials, internal hosts, azureml URIs, missing sample builder)."""
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from foundry_inference.operator import fetch, fetch_http

from .oci_registry import Registry, tarball

pytestmark = pytest.mark.unit


def artifact(reg, **extra):
    return {"type": "oci", "registry": reg.address, "repository": reg.repository, "tag": reg.tag, **extra}


def test_pulls_an_oci_artifact_with_token_auth_and_unpacks_it(tmp_path):
    with Registry(files={"model.onnx": b"x" * 5000, "sub/config.json": b"{}"}) as reg:
        dest = tmp_path / "model"
        fetch.fetch(artifact(reg), str(dest), "user", "pass", allow_private=True, insecure=True)
        assert (dest / "model.onnx").read_bytes() == b"x" * 5000
        assert (dest / "sub" / "config.json").read_bytes() == b"{}"
        assert (dest / fetch.MARKER).exists()
        fetched = len(reg.requests)
        fetch.fetch(artifact(reg), str(dest), "user", "pass", allow_private=True, insecure=True)
        assert len(reg.requests) == fetched              # already there: nothing downloaded again


def test_bad_credentials_and_missing_tags_fail_with_the_cause(tmp_path):
    with Registry() as reg:
        with pytest.raises(fetch.FetchError, match="token request refused"):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "wrong", allow_private=True, insecure=True)
        with pytest.raises(fetch.FetchError, match="manifest not available"):
            fetch.fetch(artifact(reg, tag="v9"), str(tmp_path / "m"), "user", "pass", allow_private=True,
                        insecure=True)
        assert not (tmp_path / "m").exists()           # nothing half-fetched is left looking finished


def test_corrupt_layer_is_refused_by_digest(tmp_path):
    with Registry() as reg:
        reg.layer = reg.layer[:-1] + b"!"
        with pytest.raises(fetch.FetchError, match="digest mismatch"):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True)


def test_archive_escaping_the_model_directory_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with Registry(layer=buf.getvalue()) as reg:
        with pytest.raises(fetch.FetchError, match="outside the model directory"):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True)
    assert not (tmp_path / "evil").exists()


def test_internal_hosts_are_refused_without_the_lab_switch(tmp_path):
    with Registry() as reg:
        with pytest.raises(fetch.FetchError, match="internal address"):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", insecure=True)
    with pytest.raises(fetch.FetchError, match="internal address"):
        fetch.check_host("localhost", allowlist=set())
    with pytest.raises(fetch.FetchError, match="internal address"):
        fetch.check_host("::ffff:10.0.0.1", allowlist=set())
    fetch.check_host("127.0.0.1:5000", allowlist={"127.0.0.1:5000"})     # the control plane's allow-list
    assert fetch_http._allowlist({"FOUNDRY_REGISTRY_ALLOWLIST": " Reg.Lab:5000, other "}) == {"reg.lab:5000", "other"}


def test_unfetchable_artifacts_say_why(tmp_path):
    with pytest.raises(fetch.FetchError, match="is not an azureml://registries/<registry>/models/<name>/versions"):
        fetch.fetch({"type": "uri", "uri": "azureml://registries/azureml/models/../versions/1"}, str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    try:
        import foundry_inference.samples  # noqa: F401
    except ImportError:
        with pytest.raises(fetch.FetchError, match="not available yet"):
            fetch.fetch({"type": "builtin", "name": "iris-classifier"}, str(tmp_path / "b"))


def test_command_line_reports_failure_and_progress(tmp_path):
    with Registry(files={"model.onnx": os.urandom(3 << 20)}) as reg:
        art = {"type": "oci", "registry": reg.address, "repository": reg.repository, "tag": reg.tag}
        env = {**os.environ, "FOUNDRY_FETCH_ARTIFACT": json.dumps(art), "FOUNDRY_FETCH_DEST": str(tmp_path / "m"),
               "FOUNDRY_REGISTRY_USERNAME": "user", "FOUNDRY_REGISTRY_PASSWORD": "pass",
               "FOUNDRY_FETCH_ALLOW_PRIVATE": "1", "FOUNDRY_FETCH_INSECURE": "1"}
        ok = subprocess.run([sys.executable, "-m", "foundry_inference.operator.fetch"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        assert "model.tar.gz: 100%" in ok.stderr and "pulling" in ok.stderr
        env["FOUNDRY_REGISTRY_PASSWORD"] = "nope"
        env["FOUNDRY_FETCH_DEST"] = str(tmp_path / "n")
        bad = subprocess.run([sys.executable, "-m", "foundry_inference.operator.fetch"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "failed: registry token request refused" in bad.stderr


def test_plain_files_are_saved_under_their_title(tmp_path):
    with Registry(layer=b"raw-onnx", title="model.onnx") as reg:
        fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True)
        assert (tmp_path / "m" / "model.onnx").read_bytes() == b"raw-onnx"
    assert tarball({"a": b"1"})[:2] == b"\x1f\x8b"
