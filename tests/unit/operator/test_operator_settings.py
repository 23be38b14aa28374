"""Operator settings: defaults, the chart's file layout (YAML or JSON), and a clear failure for each bad value."""
import argparse
import json

import pytest

from foundry_inference.operator import main as main_mod
from foundry_inference.operator import settings as s

pytestmark = pytest.mark.unit


def test_defaults_watch_the_operator_namespace_and_know_every_image_role():
    cfg = s.load(env={})
    assert cfg.namespaces == ("foundry-local-operator",) and cfg.operatorNamespace == "foundry-local-operator"
    assert set(cfg.images) == set(s.IMAGE_ROLES)
    assert cfg.catalog.lazyRegistrationEnabled and cfg.catalog.intervalSeconds == 6 * 3600
    assert cfg.catalog.source.endswith("catalog.json")
    embedded = cfg.for_embedded()
    assert embedded.namespaces is None and embedded.embedded      # docs/api.md decision 6: every namespace


def test_yaml_file_named_by_the_environment(tmp_path):
    path = tmp_path / "operator.yaml"
    path.write_text("""
watch:
  namespaces: [team-a, team-b]
pollIntervalSeconds: 2
images:
  nginx: registry.local/nginx:1.27
  vllm_gpu: registry.local/vllm:0.6
tls: {secretName: wildcard-tls}
ingress: {className: traefik, annotations: {a: b}}
catalog: {source: "https://catalog.example.com/catalog.json", intervalSeconds: 600, lazyRegistrationEnabled: false}
storeModel: {modelsVolumeSizeLimit: 20Gi}
authentication: {entraEnabled: true, tenantId: t, clientId: c}
""")
    cfg = s.load(env={"FOUNDRY_OPERATOR_CONFIG": str(path)})
    assert cfg.namespaces == ("team-a", "team-b") and cfg.pollIntervalSeconds == 2.0
    assert cfg.image("nginx") == "registry.local/nginx:1.27"
    assert cfg.image("generative-cpu") == s.DEFAULT_IMAGE          # roles not named keep their default
    assert cfg.tls.secretName == "wildcard-tls" and cfg.ingress.annotations == {"a": "b"}
    assert not cfg.catalog.lazyRegistrationEnabled and cfg.storeModel.modelsVolumeSizeLimit == "20Gi"
    assert cfg.authentication.mode(True) == "both" and cfg.authentication.mode(False) == "none"


def test_registry_allowlist_reaches_the_fetcher():
    from foundry_inference.operator.builders import deployment
    cfg = s.from_mapping({"registryAllowlist": ["Reg.Lab:5000"]})
    assert cfg.registryAllowlist == ("reg.lab:5000",)
    env = deployment.artifact_env({"type": "oci"}, cfg.registryAllowlist)
    assert {"name": "FOUNDRY_REGISTRY_ALLOWLIST", "value": "reg.lab:5000"} in env
    with pytest.raises(s.SettingsError, match="registryAllowlist"):
        s.from_mapping({"registryAllowlist": "a,b"})


def test_json_file(tmp_path):
    path = tmp_path / "operator.json"
    path.write_text(json.dumps({"workers": 4, "pageSize": 100}))
    cfg = s.load(str(path))
    assert cfg.workers == 4 and cfg.pageSize == 100


@pytest.mark.parametrize("doc, message", [
    ({"watch": {"namespaces": []}}, "watch.namespaces"),
    ({"watch": {"namespaces": ["Bad_NS"]}}, "watch.namespaces"),
    ({"images": {"gpu": "x"}}, "unknown role(s) gpu"),
    ({"images": {"nginx": "has space"}}, "images.nginx"),
    ({"pollIntervalSeconds": "fast"}, "pollIntervalSeconds: expected a number"),
    ({"pollIntervalSeconds": 0}, "pollIntervalSeconds"),
    ({"workers": True}, "workers: expected a number"),
    ({"catalog": {"source": "ftp://x/catalog.json"}}, "catalog.source"),
    ({"catalog": {"lazyRegistrationEnabled": "yes"}}, "catalog.lazyRegistrationEnabled: expected true or false"),
    ({"catalog": {"intervalSeconds": 1}}, "catalog.intervalSeconds"),
    ({"tls": {"secretname": "x"}}, "tls: unknown setting(s) secretname"),
    ({"authentication": {"entraEnabled": True}}, "needs tenantId and clientId"),
    ({"authentication": {"apiKeyEnabled": False}}, "enable apiKeyEnabled"),
    ({"imagePullPolicy": "Sometimes"}, "imagePullPolicy"),
    ({"surprise": 1}, "unknown setting(s) surprise"),
    ([1, 2], "must be a mapping"),
])
def test_bad_values_fail_fast_naming_the_setting(doc, message):
    with pytest.raises(s.SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        s.from_mapping(doc)


def test_unreadable_or_malformed_files_name_the_file(tmp_path):
    with pytest.raises(s.SettingsError, match="cannot read"):
        s.load(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("images: [unclosed")
    with pytest.raises(s.SettingsError, match="bad.yaml: not valid YAML"):
        s.load(str(bad))


def test_operator_command_exits_2_with_a_message_on_bad_settings(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "op.yaml"
    bad.write_text("workers: 0\n")
    monkeypatch.setenv("FOUNDRY_OPERATOR_CONFIG", str(bad))
    rc = main_mod.main(argparse.Namespace(store="embedded", data_dir=str(tmp_path), kubeconfig=None))
    err = capsys.readouterr().err
    assert rc == 2 and "invalid settings" in err and "workers: must be between 1 and 64" in err


def test_catalog_endpoints_come_from_the_environment_over_the_file(tmp_path):
    path = tmp_path / "op.yaml"
    path.write_text("catalog:\n  sourceType: configmap\n  azureRegion: westus2\n")
    cfg = s.load(env={"FOUNDRY_OPERATOR_CONFIG": str(path), "FOUNDRY_CATALOG_SOURCE": "Azure",
                      "FOUNDRY_AZUREML_REGISTRY_URL": "http://127.0.0.1:9/{region}"})
    assert cfg.catalog.sourceType == "azure" and cfg.catalog.azureRegion == "westus2"
    assert cfg.catalog.azureRegistryUrl == "http://127.0.0.1:9/{region}"
    assert s.load(env={}).catalog.sourceType == "configmap"
    for env, named in (({"FOUNDRY_CATALOG_SOURCE": "internet"}, "FOUNDRY_CATALOG_SOURCE"),
                       ({"FOUNDRY_AZURE_CATALOG_URL": "ftp://x/{region}"}, "FOUNDRY_AZURE_CATALOG_URL"),
                       ({"FOUNDRY_AZURE_REGION": "east us"}, "FOUNDRY_AZURE_REGION")):
        with pytest.raises(s.SettingsError, match=named):
            s.load(env=env)
