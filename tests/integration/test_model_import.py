"""`foundry-inference models import DIR` (operator/model_import.py): models copied from a Foundry Local cache are
registered in the model cache and then fetched for a deployment with no network at all: the Azure endpoints point
at a closed loopback port, so any request would fail the fetch.
"""
import json
import os
import subprocess

import pytest

from foundry_inference.operator import fetch
from foundry_inference.operator.blobcache import BlobCache
from tests.support.procs import CLI, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def foundry_local_cache(tmp_path):
    root = tmp_path / "foundry-cache" / "models"
    chat = root / "Microsoft" / "Phi-x-generic-cpu-3"
    write(chat / "v3" / "genai_config.json", b'{"model": {"type": "phi3"}}')
    write(chat / "v3" / "model.onnx", os.urandom(70_000))
    write(chat / "v3" / "inference_model.json", json.dumps({"Name": "Phi-x-generic-cpu:3",
                                                            "PromptTemplate": {"user": "<|user|>{Content}"}}).encode())
    write(root / "Contoso" / "iris-onnx-2" / "model.onnx", os.urandom(5_000))
    return root


@pytest.fixture
def offline(monkeypatch):
    closed = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("FOUNDRY_AZUREML_REGISTRY_URL", f"http://{closed}/{{region}}")
    monkeypatch.setenv("FOUNDRY_REGISTRY_ALLOWLIST", closed)
    monkeypatch.setenv("FOUNDRY_AZUREML_ATTEMPTS", "1")


def run_import(*args):
    return subprocess.run([CLI, "models", "import", *map(str, args)], capture_output=True, text=True, timeout=60)


def test_a_foundry_local_cache_is_imported_and_deploys_without_network(foundry_local_cache, tmp_path, offline):
    done = run_import(foundry_local_cache, "--cache", tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert "imported Phi-x-generic-cpu:3: 2 files" in done.stdout
    assert "imported iris-onnx:2: 1 files" in done.stdout
    cache = BlobCache(tmp_path / "cache")
    uri = "azureml://registries/azureml/models/Phi-x-generic-cpu/versions/3"
    fetch.fetch({"type": "uri", "uri": uri, "promptTemplate": {"user": "<|user|>{Content}"}}, str(tmp_path / "m"),
                insecure=True, cache=cache)
    source = foundry_local_cache / "Microsoft" / "Phi-x-generic-cpu-3" / "v3"
    assert (tmp_path / "m" / "model.onnx").read_bytes() == (source / "model.onnx").read_bytes()
    assert json.loads((tmp_path / "m" / "inference_model.json").read_text()) == json.loads(
        (source / "inference_model.json").read_text()), "our folder and Foundry Local's are interchangeable"
    fetch.fetch({"type": "uri", "uri": "azureml://registries/azureml/models/iris-onnx/versions/2"},
                str(tmp_path / "iris"), insecure=True, cache=cache)
    assert (tmp_path / "iris" / "model.onnx").is_file()
    # a model never imported does go to the network, which is closed here: a clear failure
    with pytest.raises(fetch.FetchError, match="no model registry region answered"):
        fetch.fetch({"type": "uri", "uri": "azureml://registries/azureml/models/Other/versions/1"},
                    str(tmp_path / "other"), insecure=True, cache=cache)
    # importing again copies nothing twice
    blobs = sorted(os.listdir(tmp_path / "cache" / "blobs" / "sha256"))
    assert run_import(foundry_local_cache, "--cache", tmp_path / "cache").returncode == 0
    assert sorted(os.listdir(tmp_path / "cache" / "blobs" / "sha256")) == blobs


def test_an_imported_file_corrupted_in_the_cache_is_not_served(foundry_local_cache, tmp_path, offline):
    assert run_import(foundry_local_cache / "Contoso", "--cache", tmp_path / "cache").returncode == 0
    blob = next((tmp_path / "cache" / "blobs" / "sha256").iterdir())
    blob.write_bytes(b"corrupted")
    with pytest.raises(fetch.FetchError, match="no model registry region answered"):
        fetch.fetch({"type": "uri", "uri": "azureml://registries/azureml/models/iris-onnx/versions/2"},
                    str(tmp_path / "iris"), insecure=True, cache=BlobCache(tmp_path / "cache"))
    assert not (tmp_path / "iris").exists()


def test_a_folder_that_names_no_model_is_refused_clearly(tmp_path):
    write(tmp_path / "loose" / "model.onnx", b"x")
    done = run_import(tmp_path / "loose", "--cache", tmp_path / "cache")
    assert done.returncode == 1 and "pass --name and --version" in done.stderr
    done = run_import(tmp_path / "loose", "--cache", tmp_path / "cache", "--name", "Loose", "--version", "1")
    assert done.returncode == 0, done.stderr
    done = run_import(tmp_path / "nothing-here", "--cache", tmp_path / "cache")
    assert done.returncode == 1 and "not a directory" in done.stderr
    assert "Traceback" not in done.stderr
