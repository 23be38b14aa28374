"""The model fetcher's `azureml://` download (operator/azureml.py, operator/azureml_fetch.py) over real HTTP against
tests/support/azure_fake.py, a loopback fake that STANDS IN FOR THE AZURE CLOUD SERVICES (the azureml registry
gateway and Azure Blob Storage cannot be reached from a test machine). The fake speaks the public protocol and
misbehaves on demand: a failing first region, 429 with Retry-After, truncated bodies, an ETag that changes
mid-download, listing pages, a `../` blob name, a listing larger than the cache.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from foundry_inference.operator import fetch, fetch_http
from foundry_inference.operator.blobcache import BlobCache
from tests.support.azure_fake import AzureFake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
CHUNK = 64 << 10


def model_files(size=300_000):
    return {"v1/genai_config.json": b'{"model": {"type": "llama"}}', "v1/model.onnx": os.urandom(size),
            "v1/tokenizer.json": b'{"version": "1.0"}', "v1/inference_model.json": b'{"Name": "stale"}',
            "README.md": b"outside the model folder"}


@pytest.fixture
def fake(monkeypatch):
    with AzureFake() as azure:
        for key, value in azure.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("FOUNDRY_AZUREML_CHUNK_BYTES", str(CHUNK))
        yield azure


def pull(uri, dest, cache=None, **extra):
    return fetch.fetch({"type": "uri", "uri": uri, **extra}, str(dest), insecure=True, cache=cache)


def cache_at(tmp_path, limit=None):
    return BlobCache(tmp_path / "cache", limit, log=fetch_http.log)


def test_the_fake_refuses_a_lookup_without_the_azure_user_agent(fake):
    uri = fake.add_model("M", "1", {"a": b"x"})
    url = f"{fake.base}/registry/centralus/modelregistry/v1.0/registry/models/nonazureaccount?assetId=" + \
        urllib.request.quote(uri, safe="")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=5)
    assert err.value.code == 400


def test_a_model_is_found_in_a_fallback_region_listed_in_pages_and_laid_out_like_foundry_local(fake, tmp_path,
                                                                                               capfd):
    files = model_files()
    uri = fake.add_model("Phi-x-generic-cpu", "3", files)
    fake.page_size = 2                                   # 5 blobs: three listing pages
    fake.failing_regions = {"centralus"}
    dest = tmp_path / "model"
    pull(uri, dest, cache_at(tmp_path), promptTemplate={"assistant": "{Content}"})
    assert sorted(p.name for p in dest.iterdir()) == [".foundry-artifact", "genai_config.json",
                                                      "inference_model.json", "model.onnx", "tokenizer.json"]
    assert (dest / "model.onnx").read_bytes() == files["v1/model.onnx"]
    assert json.loads((dest / "inference_model.json").read_text()) == {
        "Name": "Phi-x-generic-cpu:3", "PromptTemplate": {"assistant": "{Content}"}}
    paths = [p for m, p, _r, s in fake.requests if m == "GET"]
    assert paths[0] == "/registry/centralus/modelregistry/v1.0/registry/models/nonazureaccount"
    assert paths[1] == "/registry/eastus/modelregistry/v1.0/registry/models/nonazureaccount"
    assert sum(1 for p in paths if p == "/blob/phi-x-generic-cpu-3") == 3        # NextMarker followed
    ranges = [r for _m, _p, r, _s in fake.blob_gets("v1/model.onnx")]
    assert len(ranges) == 5 and all(r.startswith("bytes=") for r in ranges)    # 300 kB in 64 KiB chunks
    err = capfd.readouterr().err
    assert "trying the next region" in err and "progress: " in err and "(100%)" in err
    assert fake.sig not in err, "a SAS token reached the log"


def test_throttling_and_truncated_bodies_are_retried(fake, tmp_path, capfd):
    files = model_files(200_000)
    uri = fake.add_model("M", "1", files)
    fake.throttle, fake.retry_after, fake.truncate = 2, 1, 2
    started = time.monotonic()
    pull(uri, tmp_path / "model", cache_at(tmp_path))
    assert time.monotonic() - started >= 1.0, "Retry-After was not honoured"
    assert (tmp_path / "model" / "model.onnx").read_bytes() == files["v1/model.onnx"]
    statuses = [s for _m, _p, _r, s in fake.blob_gets()]
    assert statuses.count(429) == 2
    err = capfd.readouterr().err
    assert "HTTP 429; retrying in 1.0 s" in err and "sent" in err


def test_a_blob_that_changes_mid_download_restarts_cleanly(fake, tmp_path, capfd, monkeypatch):
    files = model_files(400_000)
    uri = fake.add_model("M", "2", files)
    fake.change_etag_after = ("v1/model.onnx", 2)
    monkeypatch.setenv("FOUNDRY_AZUREML_PARALLEL", "1")
    pull(uri, tmp_path / "model", cache_at(tmp_path))
    changed = fake.containers["m-2"].files["v1/model.onnx"]
    assert changed != files["v1/model.onnx"]
    assert (tmp_path / "model" / "model.onnx").read_bytes() == changed        # never a mix of the two versions
    assert 412 in [s for _m, _p, _r, s in fake.blob_gets("v1/model.onnx")]
    assert "the blob changed during the download" in capfd.readouterr().err


def test_attack_a_blob_name_escaping_the_model_folder_is_refused_before_any_download(fake, tmp_path):
    uri = fake.add_model("M", "1", model_files(1000))
    fake.containers["m-1"].extra.append(("v1/../../etc/passwd", 10))
    with pytest.raises(fetch.FetchError, match="would escape the model folder"):
        pull(uri, tmp_path / "model", cache_at(tmp_path))
    assert fake.blob_gets() == [] and not (tmp_path / "model").exists()


def test_attack_a_blob_host_inside_the_network_is_refused(fake, tmp_path):
    """The gateway's answer names the blob host: it goes through the SSRF guard like any host the fetcher contacts."""
    uri = fake.add_model("M", "1", model_files(1000))
    fake.sas_base = "http://169.254.169.254"                 # the cloud metadata service
    with pytest.raises(fetch.FetchError, match="refusing to fetch from 169.254.169.254: it resolves to the internal"):
        pull(uri, tmp_path / "model", cache_at(tmp_path))
    assert not (tmp_path / "model").exists()


def test_attack_a_redirect_from_the_blob_store_is_not_followed(fake, tmp_path):
    uri = fake.add_model("M", "1", model_files(1000))
    fake.redirect_blobs = "http://169.254.169.254/latest/meta-data/"
    with pytest.raises(fetch.FetchError, match="HTTP 302"):
        pull(uri, tmp_path / "model", cache_at(tmp_path))
    assert not (tmp_path / "model").exists()


def test_attack_a_listing_shorter_than_the_blob_fails_its_size_check(fake, tmp_path):
    """The listing is the size check's reference (as in Foundry Local): a blob longer than listed was cut at the
    listed length and served as the model (half a model, its digest recorded as the right one)."""
    files = model_files(300_000)
    uri = fake.add_model("M", "1", files)
    fake.listed_sizes = {"v1/model.onnx": 200_000}
    with pytest.raises(fetch.FetchError, match="v1/model.onnx: size check failed: the blob has 300000 bytes, "
                                               "the listing said 200000"):
        pull(uri, tmp_path / "model", cache_at(tmp_path))
    assert not (tmp_path / "model").exists()


def test_a_listing_longer_than_the_blob_fails_its_size_check_without_retrying(fake, tmp_path):
    uri = fake.add_model("M", "1", model_files(300_000))
    fake.listed_sizes = {"v1/model.onnx": 300_010}
    started = time.monotonic()
    with pytest.raises(fetch.FetchError, match="size check failed: the blob has 300000 bytes, the listing said 300010"):
        pull(uri, tmp_path / "model", cache_at(tmp_path))
    assert time.monotonic() - started < 5, "a size mismatch is final: no retry with backoff"
    assert not (tmp_path / "model").exists()


def test_a_predictive_model_without_genai_config_is_laid_out_from_the_root(fake, tmp_path):
    uri = fake.add_model("iris-onnx", "2", {"model.onnx": b"onnx-bytes", "labels.txt": b"a\nb\n"})
    pull(uri, tmp_path / "model", cache_at(tmp_path))
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [".foundry-artifact", "inference_model.json",
                                                                       "labels.txt", "model.onnx"]


def test_a_listing_ten_times_the_cache_limit_fails_at_once(fake, tmp_path):
    uri = fake.add_model("M", "1", model_files(1000))
    fake.containers["m-1"].extra.append(("v1/model.onnx.data", 10 << 20))
    with pytest.raises(fetch.FetchError, match=r"model needs 10\.0 MiB .* but the model cache limit is 1\.0 MiB"):
        pull(uri, tmp_path / "model", cache_at(tmp_path, limit=1 << 20))
    assert fake.blob_gets() == [] and not (tmp_path / "model").exists()


def test_an_unknown_model_and_a_refused_sas_fail_clearly(fake, tmp_path):
    with pytest.raises(fetch.FetchError, match="the model registry answered not found"):
        pull("azureml://registries/azureml/models/Nope/versions/1", tmp_path / "a", cache_at(tmp_path))
    uri = fake.add_model("M", "1", model_files(1000))
    fake.expired_sig = "expired"                         # the SAS the gateway hands out does not verify
    with pytest.raises(fetch.FetchError, match="HTTP 403 \\(the SAS token was refused\\)") as err:
        pull(uri, tmp_path / "b", cache_at(tmp_path))
    assert "expired" not in str(err.value) and "sig=" not in str(err.value)
    with pytest.raises(fetch.FetchError, match="not an azureml://"):
        pull("azureml://registries/azureml/models/../versions/1", tmp_path / "c", cache_at(tmp_path))


def test_the_second_deployment_and_a_restart_use_the_cache_without_any_request(fake, tmp_path, capfd):
    files = model_files()
    uri = fake.add_model("M", "1", files)
    cache = cache_at(tmp_path)
    pull(uri, tmp_path / "one", cache)
    seen = len(fake.requests)
    pull(uri, tmp_path / "two", cache)
    assert len(fake.requests) == seen, "the second deployment of the model went to the network"
    assert "cached (4 files, verified): not downloaded" in capfd.readouterr().err
    assert (tmp_path / "two" / "model.onnx").read_bytes() == files["v1/model.onnx"]
    # the two folders share one copy of each file with the cache
    assert os.path.samefile(tmp_path / "one" / "model.onnx", tmp_path / "two" / "model.onnx")
    # a cached blob corrupted on disk is detected and downloaded again
    blob = next(p for p in (tmp_path / "cache" / "blobs" / "sha256").iterdir()
                if p.stat().st_size == len(files["v1/model.onnx"]))
    os.chmod(blob, 0o644)
    os.unlink(blob)
    blob.write_bytes(b"x" * len(files["v1/model.onnx"]))
    pull(uri, tmp_path / "three", cache)
    assert (tmp_path / "three" / "model.onnx").read_bytes() == files["v1/model.onnx"]
    assert len(fake.blob_gets("v1/model.onnx")) > 5


def test_without_a_configured_cache_the_download_resumes_from_the_model_volume(fake, tmp_path):
    """A Kubernetes pod has no shared cache: the cache lives beside the model folder, in the same emptyDir."""
    files = model_files(100_000)
    uri = fake.add_model("M", "1", files)
    dest = tmp_path / "models" / "model"
    pull(uri, dest)
    assert (dest / "model.onnx").read_bytes() == files["v1/model.onnx"]
    assert (tmp_path / "models" / ".foundry-cache" / "assets" / "azureml" / "M" / "1.json").is_file()


def test_the_ssrf_guard_and_https_only_still_apply(fake, tmp_path, monkeypatch):
    uri = fake.add_model("M", "1", model_files(1000))
    monkeypatch.delenv("FOUNDRY_REGISTRY_ALLOWLIST")
    with pytest.raises(fetch.FetchError, match="refusing to fetch from 127.0.0.1: it resolves to the internal address"):
        pull(uri, tmp_path / "a", cache_at(tmp_path))
    monkeypatch.setenv("FOUNDRY_REGISTRY_ALLOWLIST", fake.host)
    with pytest.raises(fetch.FetchError, match="plain http is refused"):
        fetch.fetch({"type": "uri", "uri": uri}, str(tmp_path / "b"), insecure=False, cache=cache_at(tmp_path))


def test_a_fetcher_killed_mid_download_resumes_where_it_stopped(fake, tmp_path):
    files = model_files(2_000_000)                       # 31 chunks of 64 KiB
    uri = fake.add_model("M", "1", files)
    fake.delay = 0.05
    env = {**os.environ, "FOUNDRY_FETCH_ARTIFACT": json.dumps({"type": "uri", "uri": uri}),
           "FOUNDRY_FETCH_DEST": str(tmp_path / "model"), "FOUNDRY_FETCH_CACHE": str(tmp_path / "cache"),
           "FOUNDRY_AZUREML_PARALLEL": "2"}
    command = [sys.executable, "-c", "from foundry_inference.operator.fetch import main; raise SystemExit(main())"]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(fake.blob_gets("v1/model.onnx")) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    first = fake.bytes_served("v1/model.onnx")
    assert 0 < first < len(files["v1/model.onnx"])
    fake.delay = 0
    done = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "v1/model.onnx: resuming the download at byte" in done.stderr
    assert (tmp_path / "model" / "model.onnx").read_bytes() == files["v1/model.onnx"]
    total = fake.bytes_served("v1/model.onnx")
    assert total < len(files["v1/model.onnx"]) + first, "the resumed download started over"


def test_the_catalogs_detected_region_is_tried_first_unless_one_is_configured(fake, tmp_path, monkeypatch):
    uri = fake.add_model("M", "1", model_files(1000))
    pull(uri, tmp_path / "a", cache_at(tmp_path / "one"), region="westus3")
    assert fake.requests[0][1] == "/registry/westus3/modelregistry/v1.0/registry/models/nonazureaccount"
    monkeypatch.setenv("FOUNDRY_AZURE_REGION", "northeurope")
    pull(uri, tmp_path / "b", cache_at(tmp_path / "two"), region="westus3")
    assert [p for _m, p, _r, _s in fake.requests if p.startswith("/registry/")][-1] == \
        "/registry/northeurope/modelregistry/v1.0/registry/models/nonazureaccount"


def test_two_fetchers_of_one_model_at_once_download_it_once(fake, tmp_path):
    import threading
    files = model_files(500_000)
    uri = fake.add_model("M", "1", files)
    fake.delay = 0.02
    errors = []

    def one(name):
        try:
            pull(uri, tmp_path / name, cache_at(tmp_path))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=one, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert fake.bytes_served("v1/model.onnx") == len(files["v1/model.onnx"])
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()


def test_a_private_https_endpoint_is_trusted_by_its_registry_ca_only(tmp_path, monkeypatch):
    """catalog.azure.registryUrl on the site's network over https with a private CA (registryTrust.caBundles reaches
    the fetcher as FOUNDRY_REGISTRY_CAS): verified against that CA, and refused without it."""
    import ssl

    from tests.kube import pki
    ca, cert, key = pki.write_ca_and_cert(tmp_path / "pki", "azure", ["127.0.0.1"], [])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with AzureFake(tls=tls) as azure:
        uri = azure.add_model("M", "1", model_files(100_000))
        env = {**azure.env(), "FOUNDRY_FETCH_INSECURE": ""}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert azure.base.startswith("https://")
        with pytest.raises(fetch.FetchError, match=f"^{azure.host}: the TLS certificate is not trusted "
                                                   r"\(.*\); a private endpoint's CA goes in the chart value "
                                                   "registryTrust.caBundles$"):
            fetch.fetch({"type": "uri", "uri": uri}, str(tmp_path / "a"), cache=cache_at(tmp_path))
        assert len(azure.requests) == 0, "an untrusted endpoint is not asked again in other regions"
        monkeypatch.setenv("FOUNDRY_REGISTRY_CAS", json.dumps({azure.host: open(ca).read()}))
        fetch.fetch({"type": "uri", "uri": uri}, str(tmp_path / "b"), cache=cache_at(tmp_path))
        assert (tmp_path / "b" / "genai_config.json").is_file()
