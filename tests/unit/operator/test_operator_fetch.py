"""The model fetcher against a loopback OCI registry: token auth, digest check, safe unpacking, idempotence, and the
failures a deployment reports (bad credentials, internal hosts, azureml URIs, missing sample builder)."""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from foundry_inference.operator import fetch, fetch_http

from .oci_registry import ObjectStorage, Registry, tarball

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
    with pytest.raises(fetch.FetchError, match="internal"):
        fetch.check_host("localhost", allowlist=set())
    with pytest.raises(fetch.FetchError, match="internal address"):
        fetch.check_host("[::ffff:10.0.0.1]", allowlist=set())
    with pytest.raises(fetch.FetchError, match="IP addresses are not allowed"):
        fetch.check_host("20.1.2.3", allowlist=set())         # a public address, but never a literal
    assert fetch.check_host("127.0.0.1:5000", allowlist={"127.0.0.1:5000"}) == ["127.0.0.1"]   # the allow-list
    assert fetch_http._allowlist({"FOUNDRY_REGISTRY_ALLOWLIST": " Reg.Lab:5000, other "}) == {"reg.lab:5000", "other"}


def test_allowlisted_registry_pulls_without_the_lab_switch(tmp_path):
    with Registry(files={"model.onnx": b"ok"}) as reg:
        fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", insecure=True, allowlist={reg.address})
        assert (tmp_path / "m" / "model.onnx").read_bytes() == b"ok"


def test_attack_blob_redirects_never_carry_the_registry_token_to_another_host(tmp_path):
    with Registry(files={"model.onnx": b"from-storage"}) as reg:
        with ObjectStorage(reg.layer) as storage:
            reg.redirect_blobs_to = lambda path: f"{storage.url}/container/blob?sig=signed"
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", insecure=True,
                        allowlist={reg.address, storage.url.split("//")[1]})
    assert (tmp_path / "m" / "model.onnx").read_bytes() == b"from-storage"
    [(path, headers)] = storage.seen
    assert path == "/container/blob?sig=signed"
    assert not {k.lower() for k in headers} & {"authorization", "cookie", "proxy-authorization"}, headers


def test_attack_a_redirect_hop_is_checked_by_the_ssrf_guard(tmp_path):
    # the registry is allow-listed; the host it redirects to is loopback and is not: refused, never contacted
    with Registry() as reg, ObjectStorage(reg.layer) as storage:
        reg.redirect_blobs_to = lambda path: f"{storage.url}/blob"
        with pytest.raises(fetch.FetchError, match="internal address"):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", insecure=True, allowlist={reg.address})
    assert storage.seen == []


def test_attack_redirects_are_bounded_and_never_downgrade_to_http(tmp_path):
    with Registry() as reg, ObjectStorage(reg.layer, hops=10) as storage:
        reg.redirect_blobs_to = lambda path: f"{storage.url}/blob"
        with pytest.raises(fetch.FetchError, match="more than 5 redirects"):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", insecure=True, allow_private=True)
        assert len(storage.seen) == 5
    with pytest.raises(fetch.FetchError, match="only https may be followed"):
        fetch_http.redirect_target("https://reg.example.com/v2/b", "http://storage.example.com/b", insecure=True)
    with pytest.raises(fetch.FetchError, match="only https may be followed"):
        fetch_http.redirect_target("https://reg.example.com/v2/b", "ftp://storage.example.com/b", insecure=False)
    assert fetch_http.redirect_target("https://reg.example.com/v2/b", "/x?y=1", False) == "https://reg.example.com/x?y=1"


def test_attack_the_fetcher_connects_to_the_address_it_checked(tmp_path):
    # a name the guard resolved is connected to by that address: no second lookup that DNS could answer differently.
    # (DNS cannot be steered from a test: the guard's resolver parameter stands in for it, as in tests/unit/test_ssrf.)
    with Registry(files={"model.onnx": b"pinned"}) as reg:
        lookups = []

        def resolver(name):                      # `.example` never resolves in real DNS
            lookups.append(name)
            return ["127.0.0.1"] if name in ("models.example", "127.0.0.1") else []

        port = reg.port
        http = fetch_http.Http("user", "pass", insecure=True, resolver=resolver,
                               allowlist={f"models.example:{port}", reg.address})     # (its token realm)
        fetch.fetch_oci({"type": "oci", "registry": f"models.example:{port}", "repository": reg.repository,
                         "tag": reg.tag}, str(tmp_path), http)
        assert (tmp_path / "model.onnx").read_bytes() == b"pinned"
        assert lookups.count("models.example") == 1 + sum(not p.startswith("/token") for p in reg.requests)


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


def test_a_failure_is_also_the_termination_message_the_kubelet_reads_first(tmp_path):
    """A kubelet may lose an exited init container's log (then FallbackToLogsOnError has nothing but its own read
    error): the cause is written to the terminationMessagePath file the operator names, which the kubelet reads
    first. Without the setting (embedded mode) no file is written."""
    from foundry_inference.operator import pod_status
    path = tmp_path / "termination-log"
    path.write_text("")                                       # the kubelet creates the file
    env = {"FOUNDRY_FETCH_ARTIFACT": json.dumps({"type": "oci", "registry": "registry.invalid", "repository": "m",
                                                 "tag": "1"}),
           "FOUNDRY_FETCH_DEST": str(tmp_path / "m"), "FOUNDRY_FETCH_TERMINATION_LOG": str(path)}
    assert fetch.main(env) == 1
    message = path.read_text()
    assert message.startswith("model-fetcher: failed: ") and "registry.invalid" in message, message
    status = {"name": "model-fetcher", "restartCount": 0,
              "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}}}
    assert pod_status._fetch_problem(status)[1] == "model fetch failed (attempt 1): " + \
        message.split("failed: ", 1)[1].strip()
    del env["FOUNDRY_FETCH_TERMINATION_LOG"]
    path.unlink()
    assert fetch.main(env) == 1 and not path.exists()


def test_plain_files_are_saved_under_their_title(tmp_path):
    with Registry(layer=b"raw-onnx", title="model.onnx") as reg:
        fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True)
        assert (tmp_path / "m" / "model.onnx").read_bytes() == b"raw-onnx"
    assert tarball({"a": b"1"})[:2] == b"\x1f\x8b"


def test_attack_a_uri_download_is_held_to_its_sha256_and_size(tmp_path):
    body = b"model-bytes" * 100
    good = hashlib.sha256(body).hexdigest()
    with ObjectStorage(body) as storage:
        uri = f"{storage.url}/models/model.onnx"
        fetch.fetch({"type": "uri", "uri": uri, "sha256": good, "size": len(body)}, str(tmp_path / "ok"),
                    allow_private=True, insecure=True)
        assert (tmp_path / "ok" / "model.onnx").read_bytes() == body
        with pytest.raises(fetch.FetchError, match="digest mismatch"):
            fetch.fetch({"type": "uri", "uri": uri, "sha256": "0" * 64}, str(tmp_path / "bad"), allow_private=True,
                        insecure=True)
        with pytest.raises(fetch.FetchError, match="more than"):
            fetch.fetch({"type": "uri", "uri": uri, "size": 10}, str(tmp_path / "big"), allow_private=True,
                        insecure=True)
        with pytest.raises(fetch.FetchError, match="sha256 must be"):
            fetch.fetch({"type": "uri", "uri": uri, "sha256": "nope"}, str(tmp_path / "x"), allow_private=True,
                        insecure=True)
    assert not any((tmp_path / d).exists() for d in ("bad", "big", "x"))
