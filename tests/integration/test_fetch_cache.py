"""The model fetcher's shared blob cache (FOUNDRY_FETCH_CACHE) against a real OCI registry: Debian's docker-registry
on loopback, models pushed with the `oras` Python package, and a loopback counting proxy in between (real HTTP) that
shows which blobs the fetcher downloaded, with which Range header, and can slow a download down so that the fetcher
process can be killed in the middle of it.

Covered: a second deployment of an artifact served from the cache (no blob GET); a partial download resumed with a
Range request (pre-seeded, and left by a fetcher killed mid-stream); a partial holding wrong bytes discarded;
a limit smaller than the artifact failing at once with nothing written; least-recently-used eviction of unused blobs
only; a corrupted cached blob re-fetched; two fetchers of one blob sharing one download.
"""
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from foundry_inference.operator import fetch, fetch_http
from foundry_inference.operator.blobcache import BlobCache
from tests.support import registry as registry_support
from tests.support.proxy import CountingProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def registry():
    registry_support.require_registry()
    with registry_support.DockerRegistry() as reg:
        yield reg


@pytest.fixture
def proxy(registry):
    with CountingProxy(registry.address) as counting:
        yield counting


class Model:
    """One model pushed to the registry: its files, its layer (the tar.gz blob) and where the cache keeps it."""

    def __init__(self, registry, repository, size):
        self.files = {"model.bin": os.urandom(size)}          # random: the tar.gz is about as big as the file
        self.repository = repository
        registry.push_model(self.files, repository, "v1")
        layer = registry.manifest(repository, "v1")["layers"][0]
        self.hex, self.size = layer["digest"].split(":")[1], layer["size"]
        self.blob_bytes = requests.get(f"http://{registry.address}/v2/{repository}/blobs/{layer['digest']}",
                                       timeout=10).content
        assert hashlib.sha256(self.blob_bytes).hexdigest() == self.hex

    def artifact(self, proxy):
        return {"type": "oci", "registry": proxy.address, "repository": self.repository, "tag": "v1"}

    def check(self, dest):
        assert (dest / "model.bin").read_bytes() == self.files["model.bin"]


def cache_at(tmp_path, limit=None):
    return BlobCache(tmp_path / "cache", limit, log=fetch_http.log)


def pull(model, proxy, dest, cache):
    return fetch.fetch(model.artifact(proxy), str(dest), allow_private=True, insecure=True, cache=cache)


def cache_files(cache):
    return sorted(os.path.relpath(os.path.join(root, name), cache.root)
                  for sub in ("blobs", "partial") for root, _dirs, names in os.walk(os.path.join(cache.root, sub))
                  for name in names)


def test_a_second_deployment_of_an_artifact_is_served_from_the_cache(registry, proxy, tmp_path, capfd):
    model = Model(registry, "cache/shared", 300 << 10)
    cache = cache_at(tmp_path)
    pull(model, proxy, tmp_path / "first" / "model", cache)
    model.check(tmp_path / "first" / "model")
    assert len(proxy.blob_gets()) == 1
    assert cache_files(cache) == [f"blobs/sha256/{model.hex}"]          # no partial download left behind
    capfd.readouterr()

    proxy.clear()
    pull(model, proxy, tmp_path / "second" / "model", cache)
    model.check(tmp_path / "second" / "model")
    assert proxy.blob_gets() == [], "the cached blob was downloaded again"
    assert [r for r in proxy.requests if "/manifests/" in r[1]], "the manifest is still asked for"
    assert f"model.tar.gz: cached (sha256:{model.hex[:12]}" in capfd.readouterr().err


def test_a_partial_download_is_resumed_with_a_range_request(registry, proxy, tmp_path, capfd):
    model = Model(registry, "cache/resume", 400 << 10)
    cache = cache_at(tmp_path)
    half = model.size // 2
    os.makedirs(os.path.dirname(cache.partial(model.hex)))
    with open(cache.partial(model.hex), "wb") as fh:
        fh.write(model.blob_bytes[:half])
    pull(model, proxy, tmp_path / "model", cache)
    model.check(tmp_path / "model")
    assert [(rng, status) for _path, rng, status in proxy.blob_gets()] == [(f"bytes={half}-", 206)]
    assert f"resuming the download at byte {half} of {model.size}" in capfd.readouterr().err
    assert cache_files(cache) == [f"blobs/sha256/{model.hex}"]
    assert hashlib.sha256(open(cache.blob(model.hex), "rb").read()).hexdigest() == model.hex


def test_a_fetcher_killed_mid_download_leaves_a_partial_that_the_next_one_resumes(registry, tmp_path):
    model = Model(registry, "cache/killed", 3 << 20)
    cache = cache_at(tmp_path)
    with CountingProxy(registry.address, delay=0.05, chunk=32 << 10) as slow:      # about 5 s for the blob
        env = {**os.environ, "FOUNDRY_FETCH_ARTIFACT": json.dumps(model.artifact(slow)),
               "FOUNDRY_FETCH_DEST": str(tmp_path / "killed" / "model"), "FOUNDRY_FETCH_CACHE": cache.root,
               "FOUNDRY_FETCH_ALLOW_PRIVATE": "1", "FOUNDRY_FETCH_INSECURE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "foundry_inference.operator.fetch"], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (not os.path.exists(cache.partial(model.hex)) or
                                                   os.path.getsize(cache.partial(model.hex)) < 512 << 10):
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()
    left = os.path.getsize(cache.partial(model.hex))
    assert 0 < left < model.size and not os.path.exists(cache.blob(model.hex))
    assert not (tmp_path / "killed" / "model").exists(), "a half-fetched model looks finished"

    with CountingProxy(registry.address) as proxy:
        pull(model, proxy, tmp_path / "model", cache)
        assert [(rng, status) for _path, rng, status in proxy.blob_gets()] == [(f"bytes={left}-", 206)]
    model.check(tmp_path / "model")
    assert cache_files(cache) == [f"blobs/sha256/{model.hex}"]


def test_a_partial_download_of_wrong_bytes_is_discarded_and_the_fetch_still_verifies(registry, proxy, tmp_path,
                                                                                      capfd):
    model = Model(registry, "cache/wrong-partial", 200 << 10)
    cache = cache_at(tmp_path)
    os.makedirs(os.path.dirname(cache.partial(model.hex)))
    with open(cache.partial(model.hex), "wb") as fh:
        fh.write(os.urandom(model.size // 2))
    pull(model, proxy, tmp_path / "model", cache)
    model.check(tmp_path / "model")
    assert [(rng, status) for _path, rng, status in proxy.blob_gets()] == [
        (f"bytes={model.size // 2}-", 206), (None, 200)]
    assert "the resumed download does not match its digest; discarding the partial" in capfd.readouterr().err
    assert cache_files(cache) == [f"blobs/sha256/{model.hex}"]


def test_a_model_larger_than_the_cache_limit_fails_at_once_and_writes_nothing(registry, proxy, tmp_path):
    model = Model(registry, "cache/too-big", 1 << 20)
    cache = cache_at(tmp_path, limit=100 << 10)
    started = time.monotonic()
    with pytest.raises(fetch.FetchError, match=r"model needs 1\.0 MiB \(\d+ bytes\) but the model cache limit is "
                                               r"100\.0 KiB \(102400 bytes\)"):
        pull(model, proxy, tmp_path / "model", cache)
    assert time.monotonic() - started < 5
    assert proxy.blob_gets() == [], "the download started anyway"
    assert cache_files(cache) == []
    assert not (tmp_path / "model").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fetch-")]


def test_least_recently_used_unused_blobs_are_evicted_to_make_room(registry, proxy, tmp_path, capfd):
    a, b, c = (Model(registry, f"cache/lru-{n}", 400 << 10) for n in "abc")
    cache = cache_at(tmp_path, limit=a.size + b.size + 1000)            # room for two of them
    pull(a, proxy, tmp_path / "a" / "model", cache)
    time.sleep(0.05)
    pull(b, proxy, tmp_path / "b" / "model", cache)
    time.sleep(0.05)
    pull(a, proxy, tmp_path / "a2" / "model", cache)                   # a is used again: b is now the oldest
    capfd.readouterr()
    pull(c, proxy, tmp_path / "c" / "model", cache)
    c.check(tmp_path / "c" / "model")
    assert f"evicted sha256:{b.hex[:12]}" in capfd.readouterr().err
    assert sorted(cache_files(cache)) == sorted([f"blobs/sha256/{a.hex}", f"blobs/sha256/{c.hex}"])


def test_a_blob_in_use_is_never_evicted(registry, proxy, tmp_path):
    a, b = Model(registry, "cache/inuse-a", 300 << 10), Model(registry, "cache/inuse-b", 300 << 10)
    cache = cache_at(tmp_path, limit=a.size + 1000)                     # room for one of them
    pull(a, proxy, tmp_path / "a" / "model", cache)
    fd = os.open(os.path.join(cache.locks, f"{a.hex}.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)                                  # another fetcher is unpacking a
        proxy.clear()
        with pytest.raises(fetch.FetchError, match="but the model cache limit is .* in use by other fetches"):
            pull(b, proxy, tmp_path / "b" / "model", cache)
        assert proxy.blob_gets() == []
        assert cache_files(cache) == [f"blobs/sha256/{a.hex}"]
    finally:
        os.close(fd)
    pull(b, proxy, tmp_path / "b" / "model", cache)                    # once a is free, it makes room
    b.check(tmp_path / "b" / "model")
    assert cache_files(cache) == [f"blobs/sha256/{b.hex}"]


def test_a_corrupted_cached_blob_is_detected_by_digest_and_fetched_again(registry, proxy, tmp_path, capfd):
    model = Model(registry, "cache/corrupt", 300 << 10)
    cache = cache_at(tmp_path)
    pull(model, proxy, tmp_path / "first" / "model", cache)
    data = bytearray(open(cache.blob(model.hex), "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(cache.blob(model.hex), "wb").write(bytes(data))
    proxy.clear()
    capfd.readouterr()
    pull(model, proxy, tmp_path / "second" / "model", cache)
    model.check(tmp_path / "second" / "model")
    assert f"cached blob sha256:{model.hex[:12]} does not match its digest" in capfd.readouterr().err
    assert [(rng, status) for _path, rng, status in proxy.blob_gets()] == [(None, 200)]
    assert open(cache.blob(model.hex), "rb").read() == model.blob_bytes


def test_two_fetchers_of_one_blob_share_one_download(registry, tmp_path):
    model = Model(registry, "cache/concurrent", 1 << 20)
    cache = cache_at(tmp_path)
    with CountingProxy(registry.address, delay=0.02, chunk=64 << 10) as slow:
        procs = []
        for name in ("one", "two"):
            env = {**os.environ, "FOUNDRY_FETCH_ARTIFACT": json.dumps(model.artifact(slow)),
                   "FOUNDRY_FETCH_DEST": str(tmp_path / name / "model"), "FOUNDRY_FETCH_CACHE": cache.root,
                   "FOUNDRY_FETCH_ALLOW_PRIVATE": "1", "FOUNDRY_FETCH_INSECURE": "1"}
            procs.append(subprocess.Popen([sys.executable, "-m", "foundry_inference.operator.fetch"], env=env,
                                          cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        logs = [proc.communicate(timeout=60)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], logs
        assert len(slow.blob_gets()) == 1, slow.blob_gets()
    assert sum("cached (sha256:" in log for log in logs) == 1
    for name in ("one", "two"):
        model.check(tmp_path / name / "model")
    assert cache_files(cache) == [f"blobs/sha256/{model.hex}"]


def test_deployments_of_one_model_share_its_unpacked_files_on_disk(registry, proxy, tmp_path, capfd):
    """Unpacked once on disk: the model folders hold hard links to one shared copy; a copy corrupted in place is
    caught by each deployment's digests and healed; a shared file nobody links any more is removed."""
    model = Model(registry, "cache/files", 200 << 10)
    cache = cache_at(tmp_path)
    first, second = tmp_path / "first" / "model", tmp_path / "second" / "model"
    pull(model, proxy, first, cache)
    pull(model, proxy, second, cache)
    model.check(first)
    model.check(second)
    shared = tmp_path / "cache" / "files" / "sha256" / hashlib.sha256(model.files["model.bin"]).hexdigest()
    assert os.path.samefile(first / "model.bin", shared) and os.path.samefile(second / "model.bin", shared)
    assert shared.stat().st_nlink == 3
    assert "model files shared with other deployments: 200.0 KiB" in capfd.readouterr().err

    with open(first / "model.bin", "r+b") as fh:                       # corrupted in place: every link sees it
        fh.write(b"\0" * 64)
    pull(model, proxy, first, cache)
    assert "model.bin does not match its digest" in capfd.readouterr().err
    model.check(first)
    assert os.path.samefile(first / "model.bin", shared), "the healed file is the shared copy again"
    assert not os.path.samefile(second / "model.bin", shared)          # still the corrupted inode ...
    pull(model, proxy, second, cache)                                  # ... until its next start
    model.check(second)
    assert os.path.samefile(second / "model.bin", shared)

    other = Model(registry, "cache/files-other", 10 << 10)
    for dest in (first, second):
        shutil.rmtree(dest.parent)
    pull(other, proxy, tmp_path / "third" / "model", cache)
    assert not shared.exists(), "a shared file no deployment links was kept"
    assert "no deployment uses any more" in capfd.readouterr().err
