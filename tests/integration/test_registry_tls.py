"""A private registry on https with a CA of its own (Debian's docker-registry on loopback, basic auth), as on-prem
sites run one: `foundry-inference models push` puts a model folder (or Foundry Local catalog models, `--mirror`)
there, and the fetcher pulls it trusting that CA for that registry only (FOUNDRY_REGISTRY_CAS, the chart's
registryTrust.caBundles) - never with verification off, never for another registry.
"""
import json
import os
import subprocess

import pytest

from foundry_inference.operator import catalog_mirror, fetch
from foundry_inference.operator import settings as settings_mod
from tests.support import registry as registry_support
from tests.support.procs import CLI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def reg():
    registry_support.require_registry()
    with registry_support.DockerRegistry(username="pusher", password="s3cret", tls=True) as registry:
        yield registry


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def push(*args, password="s3cret"):
    return subprocess.run([CLI, "models", "push", *args, "--username", "pusher", "--password-stdin"],
                          input=password + "\n", capture_output=True, text=True, timeout=120)


@pytest.fixture
def trusted(reg, monkeypatch):
    monkeypatch.setenv("FOUNDRY_REGISTRY_ALLOWLIST", reg.address)
    monkeypatch.setenv("FOUNDRY_REGISTRY_CAS", json.dumps({reg.address: open(reg.ca).read()}))
    monkeypatch.delenv("FOUNDRY_FETCH_INSECURE", raising=False)
    monkeypatch.delenv("FOUNDRY_FETCH_ALLOW_PRIVATE", raising=False)


def test_push_then_fetch_over_tls_with_the_registrys_own_ca(reg, trusted, tmp_path):
    model = tmp_path / "iris"
    write(model / "model.onnx", os.urandom(50_000))
    write(model / "labels.txt", b"a\nb\nc\n")
    done = push(str(model), f"{reg.address}/byo/iris:v1", "--ca-file", reg.ca)
    assert done.returncode == 0, done.stderr
    assert f"pushed {reg.address}/byo/iris:v1" in done.stdout
    again = push(str(model), f"{reg.address}/byo/iris:v1", "--ca-file", reg.ca)
    assert "layer already there" in again.stdout, again.stdout + again.stderr
    dest = tmp_path / "fetched"
    fetch.fetch({"type": "oci", "registry": reg.address, "repository": "byo/iris", "tag": "v1"}, str(dest),
                "pusher", "s3cret")
    assert (dest / "model.onnx").read_bytes() == (model / "model.onnx").read_bytes()
    assert (dest / "labels.txt").read_bytes() == b"a\nb\nc\n"


def test_an_untrusted_registry_certificate_is_refused_clearly(reg, trusted, tmp_path, monkeypatch):
    model = tmp_path / "m"
    write(model / "model.onnx", b"x" * 100)
    refused = push(str(model), f"{reg.address}/byo/untrusted:v1")                 # no --ca-file
    assert refused.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert push(str(model), f"{reg.address}/byo/untrusted:v1", "--ca-file", reg.ca).returncode == 0
    artifact = {"type": "oci", "registry": reg.address, "repository": "byo/untrusted", "tag": "v1"}
    monkeypatch.delenv("FOUNDRY_REGISTRY_CAS")
    with pytest.raises(fetch.FetchError, match="TLS certificate is not trusted .*registryTrust.caBundles"):
        fetch.fetch(artifact, str(tmp_path / "a"), "pusher", "s3cret")
    assert not (tmp_path / "a").exists()


def test_attack_a_ca_given_for_one_registry_is_not_trusted_for_another(reg, trusted, tmp_path, monkeypatch):
    """The private CA could sign any name: it is trusted only for the registry it was given for."""
    model = tmp_path / "m"
    write(model / "model.onnx", b"y" * 100)
    assert push(str(model), f"{reg.address}/byo/scoped:v1", "--ca-file", reg.ca).returncode == 0
    monkeypatch.setenv("FOUNDRY_REGISTRY_CAS", json.dumps({"127.0.0.1:1": open(reg.ca).read()}))
    with pytest.raises(fetch.FetchError, match="not trusted"):
        fetch.fetch({"type": "oci", "registry": reg.address, "repository": "byo/scoped", "tag": "v1"},
                    str(tmp_path / "a"), "pusher", "s3cret")


def test_attack_the_ssrf_guard_still_refuses_a_private_registry_that_is_not_allow_listed(reg, trusted, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.delenv("FOUNDRY_REGISTRY_ALLOWLIST")
    with pytest.raises(fetch.FetchError, match="internal address"):
        fetch.fetch({"type": "oci", "registry": reg.address, "repository": "byo/iris", "tag": "v1"},
                    str(tmp_path / "a"), "pusher", "s3cret")


def test_catalog_models_pushed_to_a_mirror_are_fetched_by_their_catalog_uri(reg, trusted, tmp_path):
    """A Foundry Local cache pushed with --mirror; the operator's mirror setting turns the catalog variant into that
    OCI artifact; the fetched folder is the one holding genai_config.json, with inference_model.json."""
    cache = tmp_path / "foundry" / "models"
    chat = cache / "Microsoft" / "Phi-x-generic-cpu-3" / "v3"
    write(chat / "genai_config.json", b'{"model": {"type": "phi3"}}')
    write(chat / "model.onnx", os.urandom(60_000))
    write(cache / "Contoso" / "iris-onnx-2" / "model.onnx", os.urandom(4_000))
    done = push(str(cache), "--mirror", reg.address, "--ca-file", reg.ca)
    assert done.returncode == 0, done.stderr
    uri = "azureml://registries/azureml/models/Phi-x-generic-cpu/versions/3"
    assert f"{uri} -> {reg.address}/foundry-models/azureml/phi-x-generic-cpu:3" in done.stdout
    settings = settings_mod.from_mapping({"catalog": {"mirrorRegistry": reg.address}})
    artifact = catalog_mirror.artifact(uri, settings.catalog)
    dest = tmp_path / "model"
    fetch.fetch(artifact, str(dest), "pusher", "s3cret")
    assert (dest / "genai_config.json").read_bytes() == (chat / "genai_config.json").read_bytes()
    assert (dest / "model.onnx").read_bytes() == (chat / "model.onnx").read_bytes()
    assert json.loads((dest / "inference_model.json").read_text()) == {"Name": "Phi-x-generic-cpu:3"}
    iris = catalog_mirror.artifact("azureml://registries/azureml/models/iris-onnx/versions/2", settings.catalog)
    fetch.fetch(iris, str(tmp_path / "iris"), "pusher", "s3cret")
    assert (tmp_path / "iris" / "model.onnx").stat().st_size == 4_000


def test_push_refuses_bad_input_clearly(reg, tmp_path):
    model = tmp_path / "m"
    write(model / "model.onnx", b"z")
    for args, message in [((str(model), "no-registry-here"), "is not a registry/repository:tag"),
                          ((str(model), f"{reg.address}/Upper:v1"), "lower-case repository"),
                          ((str(tmp_path / "missing"), f"{reg.address}/a:v1"), "not a directory"),
                          ((str(model),), "give either REF"),
                          ((str(model), f"{reg.address}/a:v1", "--ca-file", str(model / "model.onnx")),
                           "not a PEM certificate bundle")]:
        done = push(*args)
        assert done.returncode == 1 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    wrong = push(str(model), f"{reg.address}/a:v1", "--ca-file", reg.ca, password="wrong")
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr, wrong.stderr
