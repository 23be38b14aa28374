"""Private registries for the model fetcher: a registry's own CA (registryCAs, the chart's registryTrust.caBundles),
the SSRF allow-list reaching the operator, and the catalog mirror (catalog.mirror) turning azureml:// variants into
OCI artifacts of the admin's registry - from chart values to the fetcher's environment."""
import json

import pytest

from foundry_inference import catalog as catalog_mod
from foundry_inference.operator import catalog_mirror, fetch_http
from foundry_inference.operator import settings as settings_mod
from foundry_inference.operator import spec as spec_mod
from foundry_inference.operator.builders import deployment as dep_builder
from foundry_inference.operator.resolve import ResolutionError, resolve
from foundry_inference.operator.settings import default_catalog_source
from tests.support import helm

from .factories import mdep

pytestmark = pytest.mark.unit
CATALOG = catalog_mod.Catalog(catalog_mod.parse(open(default_catalog_source(), "rb").read()))
REG = "registry.lab:5000"


@pytest.fixture(scope="module")
def pem(tmp_path_factory):
    from tests.kube import pki
    ca, _cert, _key = pki.write_ca_and_cert(tmp_path_factory.mktemp("pki"), "registry", ["10.0.0.5"], [])
    return open(ca).read()


def _resolved(settings, **spec):
    obj = mdep("m", "team-a", **spec)
    return resolve(spec_mod.validate(spec_mod.normalise(obj)), settings, CATALOG, {})


def _env(container):
    return {e["name"]: e.get("value") for e in container["env"]}


def test_chart_values_reach_the_operator_settings(pem):
    out = helm.render({"api": {"config": {"registryAllowlist": [REG]}},
                       "registryTrust": {"caBundles": {REG: pem}},
                       "catalog": {"mirror": {"registry": REG, "repositoryPrefix": "mirror/foundry"}}})
    settings = settings_mod.from_mapping(out.operator_config())
    assert settings.registryAllowlist == (REG,)
    assert settings.registryCAs == {REG: pem}
    assert settings.catalog.mirrorRegistry == REG and settings.catalog.mirrorRepositoryPrefix == "mirror/foundry"
    defaults = settings_mod.from_mapping(helm.render({}).operator_config())
    assert defaults.registryCAs == {} and defaults.catalog.mirrorRegistry is None


@pytest.mark.parametrize("bundle, match", [
    ("not a certificate", "expected a PEM bundle"),
    ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a PEM certificate bundle"),
])
def test_a_bundle_that_is_no_certificate_stops_the_operator_at_start(bundle, match):
    with pytest.raises(settings_mod.SettingsError, match=f"registryCAs.{REG}: .*{match}"):
        settings_mod.from_mapping({"registryCAs": {REG: bundle}})


def test_attack_a_bad_bundle_never_turns_verification_off():
    with pytest.raises(fetch_http.FetchError, match="not a PEM certificate bundle"):
        fetch_http.tls_context("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    import ssl
    context = fetch_http.tls_context(None)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize("mirror", ["https://registry.lab", "registry.lab/path", "user@registry.lab"])
def test_a_mirror_must_be_a_registry_name(mirror):
    with pytest.raises(settings_mod.SettingsError, match="catalog.mirrorRegistry"):
        settings_mod.from_mapping({"catalog": {"mirrorRegistry": mirror}})


def test_the_fetcher_gets_only_its_own_registrys_ca(pem):
    settings = settings_mod.from_mapping({"registryAllowlist": [REG],
                                          "registryCAs": {REG: pem, "other.lab": pem}})
    custom = {"custom": {"registry": REG, "repository": "byo/iris", "tag": "v1"}}
    fetcher = dep_builder.model_fetcher(_resolved(settings, model=custom, workloadType="predictive"), settings)
    env = _env(fetcher)
    assert json.loads(env["FOUNDRY_REGISTRY_CAS"]) == {REG: pem}
    assert env["FOUNDRY_REGISTRY_ALLOWLIST"] == REG
    elsewhere = {"custom": {"registry": "models.example.com", "repository": "byo/iris", "tag": "v1"}}
    env = _env(dep_builder.model_fetcher(_resolved(settings, model=elsewhere, workloadType="predictive"), settings))
    assert "FOUNDRY_REGISTRY_CAS" not in env


def test_an_azureml_fetcher_gets_every_bundle_for_a_private_azure_endpoint(pem):
    """catalog.azure.registryUrl on the site's network (https, a private CA): the gateway and the blob host it names
    are only known at download time, so the fetcher gets each bundle (each trusted for its own host only)."""
    endpoint = "10.0.0.5:8443"
    settings = settings_mod.from_mapping({"registryAllowlist": [endpoint], "registryCAs": {endpoint: pem, REG: pem},
                                          "catalog": {"azureRegistryUrl": f"https://{endpoint}/{{region}}"}})
    resolved = _resolved(settings)
    assert resolved.artifact["uri"].startswith("azureml://")
    env = _env(dep_builder.model_fetcher(resolved, settings))
    assert env["FOUNDRY_AZUREML_REGISTRY_URL"] == f"https://{endpoint}/{{region}}"
    assert json.loads(env["FOUNDRY_REGISTRY_CAS"]) == {endpoint: pem, REG: pem}
    assert env["FOUNDRY_REGISTRY_ALLOWLIST"] == endpoint
    assert "FOUNDRY_FETCH_INSECURE" not in env                           # https, verified
    plain = settings_mod.from_mapping({})
    assert "FOUNDRY_REGISTRY_CAS" not in _env(dep_builder.model_fetcher(_resolved(plain), plain))


def test_with_a_mirror_a_catalog_variant_is_pulled_from_the_mirror(pem):
    plain = settings_mod.from_mapping({})
    assert _resolved(plain).artifact["uri"].startswith("azureml://registries/azureml/models/")
    settings = settings_mod.from_mapping({"catalog": {"mirrorRegistry": REG}, "registryCAs": {REG: pem}})
    resolved = _resolved(settings)
    uri = _resolved(plain).artifact["uri"]
    asset = uri.split("/models/")[1].split("/versions/")
    assert resolved.artifact == {"type": "oci", "registry": REG, "tag": asset[1], "mirrorOf": uri,
                                 "repository": f"foundry-models/azureml/{asset[0].lower()}"}
    env = _env(dep_builder.model_fetcher(resolved, settings))
    assert env["FOUNDRY_REGISTRY_ALLOWLIST"] == REG                   # the admin's own mirror is admitted
    assert json.loads(env["FOUNDRY_REGISTRY_CAS"]) == {REG: pem}
    assert "FOUNDRY_AZUREML_REGISTRY_URL" not in env                    # Azure is never contacted
    # the builtin samples stay as they are
    sample = _resolved(settings, model={"catalog": {"name": "iris-classifier"}}, workloadType="predictive")
    assert sample.artifact["type"] == "builtin"


def test_a_mirrored_name_that_is_no_oci_reference_is_a_clear_error(monkeypatch):
    settings = settings_mod.from_mapping({"catalog": {"mirrorRegistry": REG}})
    with pytest.raises(catalog_mirror.MirrorError, match="no valid mirror name"):
        catalog_mirror.artifact("azureml://registries/azureml/models/a--b/versions/1", settings.catalog)
    monkeypatch.setattr(catalog_mirror, "repository",
                        lambda *a: (_ for _ in ()).throw(catalog_mirror.MirrorError("bad name")))
    with pytest.raises(ResolutionError) as info:
        _resolved(settings)
    assert info.value.args[0] == "bad name"


def test_the_mirror_reference_is_the_one_models_push_uses():
    from foundry_inference.operator import model_push
    repo, tag = catalog_mirror.repository("foundry-models",
                                          "azureml://registries/azureml/models/Phi-4-mini-instruct-generic-cpu/versions/5")
    assert (repo, tag) == ("foundry-models/azureml/phi-4-mini-instruct-generic-cpu", "5")
    assert model_push.parse_reference(f"{REG}/{repo}:{tag}") == (REG, repo, tag)
    with pytest.raises(model_push.PushError):
        model_push.parse_reference(f"{REG}/Upper/Case:v1")
