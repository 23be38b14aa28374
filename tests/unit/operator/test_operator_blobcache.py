"""The fetcher's blob cache and size limits against what a real registry would not do (tests/unit/operator/
oci_registry.py): a registry that ignores Range or answers another range, hostile manifests; plus the size settings
(FOUNDRY_FETCH_CACHE_LIMIT_BYTES, FOUNDRY_FETCH_LIMIT_BYTES, `up --model-cache-limit`) failing clearly. The happy
paths against Debian's docker-registry are in tests/integration/test_fetch_cache.py."""
import json
import os
import subprocess
import sys

import pytest

from foundry_inference.config import ConfigurationError
from foundry_inference.operator import blobcache, fetch, fetch_http
from foundry_inference.operator.agent.agent import cache_limit
from tests.support.procs import CLI

from .oci_registry import Registry, tarball

pytestmark = pytest.mark.unit


def artifact(reg):
    return {"type": "oci", "registry": reg.address, "repository": reg.repository, "tag": reg.tag}


def seeded_cache(tmp_path, reg, length):
    cache = blobcache.BlobCache(tmp_path / "cache", log=fetch_http.log)
    hexd = reg.digest.split(":")[1]
    os.makedirs(cache.partials)
    with open(cache.partial(hexd), "wb") as fh:
        fh.write(reg.layer[:length])
    return cache, hexd


@pytest.mark.parametrize("ranges, said", [("ignore", "does not resume downloads (HTTP 200)"),
                                          ("shift", "answered HTTP 206 with range")])
def test_a_registry_that_does_not_answer_the_range_asked_is_read_from_the_start(tmp_path, capfd, ranges, said):
    with Registry(files={"model.onnx": os.urandom(200_000)}, ranges=ranges) as reg:
        cache, hexd = seeded_cache(tmp_path, reg, len(reg.layer) // 2)
        fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True,
                    cache=cache)
        assert reg.range_headers[-1] is None or ranges == "ignore"
    assert said in capfd.readouterr().err
    assert open(cache.blob(hexd), "rb").read() == reg.layer
    assert not os.path.exists(cache.partial(hexd))


def test_a_registry_that_honours_the_range_is_resumed(tmp_path):
    with Registry(files={"model.onnx": os.urandom(200_000)}, ranges="honour") as reg:
        cache, hexd = seeded_cache(tmp_path, reg, 1000)
        fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True,
                    cache=cache)
        assert reg.range_headers.count("bytes=1000-") == 1 and reg.range_headers[-1] == "bytes=1000-"
    assert open(cache.blob(hexd), "rb").read() == reg.layer


def test_a_dropped_connection_keeps_the_partial_download_for_the_next_attempt(tmp_path):
    with Registry(files={"model.onnx": os.urandom(200_000)}, ranges="honour") as reg:
        cache = blobcache.BlobCache(tmp_path / "cache", log=fetch_http.log)
        hexd = reg.digest.split(":")[1]
        reg.truncate_at = 70_000
        with pytest.raises(fetch.FetchError, match=rf"download stopped after 70000 of {len(reg.layer)} bytes"):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True,
                        cache=cache)
        assert os.path.getsize(cache.partial(hexd)) == 70_000 and not (tmp_path / "m").exists()
        reg.truncate_at = None
        fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True,
                    cache=cache)
        assert reg.range_headers[-1] == "bytes=70000-"
    assert open(cache.blob(hexd), "rb").read() == reg.layer


def test_a_complete_partial_is_verified_without_a_download_and_a_longer_one_is_discarded(tmp_path, capfd):
    with Registry(files={"model.onnx": os.urandom(50_000)}) as reg:
        cache, hexd = seeded_cache(tmp_path, reg, len(reg.layer))
        fetch.fetch(artifact(reg), str(tmp_path / "a"), "user", "pass", allow_private=True, insecure=True,
                    cache=cache)
        assert not any("/blobs/" in path for path in reg.requests)
        os.unlink(cache.blob(hexd))
        with open(cache.partial(hexd), "wb") as fh:
            fh.write(reg.layer + b"extra")
        fetch.fetch(artifact(reg), str(tmp_path / "b"), "user", "pass", allow_private=True, insecure=True,
                    cache=cache)
    assert "partial download is longer than the blob" in capfd.readouterr().err
    assert open(cache.blob(hexd), "rb").read() == reg.layer


def test_a_blob_corrupt_in_the_registry_leaves_nothing_in_the_cache(tmp_path):
    with Registry() as reg:
        reg.layer = reg.layer[:-1] + b"!"
        cache = blobcache.BlobCache(tmp_path / "cache", limit=1 << 20, log=fetch_http.log)
        with pytest.raises(fetch.FetchError, match="digest mismatch"):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True,
                        cache=cache)
    assert os.listdir(cache.blobs) == [] and os.listdir(cache.partials) == []


@pytest.mark.parametrize("layer, message", [
    ({"digest": "sha256:../../etc/passwd", "size": 3}, "has no sha256 digest"),
    ({"digest": "md5:abc", "size": 3}, "has no sha256 digest"),
    ({"digest": "sha256:" + "a" * 64}, "has no valid size"),
    ({"digest": "sha256:" + "a" * 64, "size": "big"}, "has no valid size"),
    ("not-a-layer", "not an OCI image manifest"),
])
def test_hostile_manifests_fail_clearly(tmp_path, layer, message):
    with Registry() as reg:
        reg.manifest = json.dumps({"schemaVersion": 2, "layers": [layer]}).encode()
        with pytest.raises(fetch.FetchError, match=message):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True,
                        cache=blobcache.BlobCache(tmp_path / "cache"))
    assert not (tmp_path / "cache" / "blobs").exists() or os.listdir(tmp_path / "cache" / "blobs") == []


def test_the_model_folder_limit_refuses_big_layers_and_big_unpacked_archives(tmp_path):
    with Registry(files={"model.onnx": os.urandom(100_000)}) as reg:
        with pytest.raises(fetch.FetchError, match=r"model needs 9\d\.\d KiB .* but the model volume limit is "
                                                   r"48\.8 KiB \(50000 bytes\)"):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True,
                        limit=50_000)
        assert not any("/blobs/" in path for path in reg.requests)
    with Registry(layer=tarball({"model.onnx": b"\0" * 1_000_000})) as reg:      # a small gzip of a big file
        with pytest.raises(fetch.FetchError, match="model unpacks to 976.6 KiB .* but the model volume limit"):
            fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True,
                        limit=100_000)
        fetch.fetch(artifact(reg), str(tmp_path / "m"), "user", "pass", allow_private=True, insecure=True,
                    limit=2_000_000)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fetch-")]


@pytest.mark.parametrize("text, value", [("20Gi", 20 << 30), ("500Mi", 500 << 20), ("1G", 10 ** 9),
                                         ("1048576", 1 << 20), (" 2GiB ", 2 << 30), ("1KB", 1000), ("1.5Ki", 1536)])
def test_sizes_parse_like_kubernetes_quantities(text, value):
    assert blobcache.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-1Gi", "0", "20 Gigs", "1e999999999", "100m", "Gi"])
def test_bad_sizes_say_what_is_expected(text):
    with pytest.raises(ValueError, match="expected a size such as 20Gi"):
        blobcache.parse_size(text, "FOUNDRY_MODEL_CACHE_LIMIT")
    with pytest.raises(ConfigurationError, match="^FOUNDRY_MODEL_CACHE_LIMIT: expected a size"):
        cache_limit(text)
    assert blobcache.format_size(1536) == "1.5 KiB (1536 bytes)" and blobcache.format_size(7) == "7 bytes"


def test_the_fetcher_command_refuses_bad_size_settings_without_a_traceback(tmp_path):
    for name in ("FOUNDRY_FETCH_CACHE_LIMIT_BYTES", "FOUNDRY_FETCH_LIMIT_BYTES"):
        env = {**os.environ, "FOUNDRY_FETCH_ARTIFACT": '{"type": "uri", "uri": "https://example.com/m.onnx"}',
               "FOUNDRY_FETCH_DEST": str(tmp_path / "m"), "FOUNDRY_FETCH_CACHE": str(tmp_path / "cache"),
               name: "twenty gigs"}
        out = subprocess.run([sys.executable, "-m", "foundry_inference.operator.fetch"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1
        assert f"failed: {name}: expected a size such as 20Gi" in out.stderr and "Traceback" not in out.stderr
    env["FOUNDRY_FETCH_ARTIFACT"] = "[1, 2]"
    out = subprocess.run([sys.executable, "-m", "foundry_inference.operator.fetch"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not a JSON object" in out.stderr


def test_up_refuses_a_bad_model_cache_limit_before_starting_anything(tmp_path):
    for args, env in ((["--model-cache-limit", "lots"], {}), ([], {"FOUNDRY_MODEL_CACHE_LIMIT": "-5Gi"})):
        out = subprocess.run([CLI, "up", "--data-dir", str(tmp_path / "data"), *args],
                             env={**os.environ, "FOUNDRY_SAMPLES": "none", **env}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert "configuration error" in out.stderr and "expected a size such as 20Gi" in out.stderr
        assert "Traceback" not in out.stderr
        assert not (tmp_path / "data").exists(), "up started before checking its settings"
