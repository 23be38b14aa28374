"""values.schema.json is strict (unknown keys and wrong types fail) and the chart refuses inconsistent values with a
message that names what to change. Each invalid case goes through a values file, as `helm install -f` reads it."""
import copy
import json

import helm_python
import pytest
import yaml

from tests.support import helm

pytestmark = pytest.mark.unit

SCHEMA = json.loads((helm.CHART / "values.schema.json").read_text())
ENTRA = {"enabled": True, "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
         "clientId": "6e5a1b2c-3d4e-4f50-8a9b-0c1d2e3f4a5b"}

# (values, what the message must contain): rejected by the schema
SCHEMA_CASES = {
    "unknown-top-level-key": ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
    "unknown-nested-key": ({"api": {"exposure": "internal", "expose": "external"}},
                           "additional properties 'expose' not allowed"),
    "typo-in-entra": ({"entraAuth": {"tenantID": "x"}}, "additional properties 'tenantID' not allowed"),
    "exposure-not-an-option": ({"api": {"exposure": "public"}},
                               "'/api/exposure': value must be one of 'internal', 'external', 'none'"),
    "replicas-as-string": ({"api": {"replicas": "2"}}, "'/api/replicas': got string, want integer"),
    "boolean-as-string": ({"apiKey": {"enabled": "yes"}}, "'/apiKey/enabled': got string, want boolean"),
    "namespaces-not-a-list": ({"watch": {"namespaces": "team-a"}}, "'/watch/namespaces': got string, want array"),
    "namespace-not-a-dns-label": ({"watch": {"namespaces": ["Team_A"]}}, "'/watch/namespaces/0': 'Team_A'"),
    "tenant-not-a-guid": ({"entraAuth": {**ENTRA, "tenantId": "contoso.onmicrosoft.com"}},
                          "'/entraAuth/tenantId': 'contoso.onmicrosoft.com' does not match pattern"),
    "unknown-image-role": ({"images": {"roles": {"generative-npu": "x"}}},
                           "additional properties 'generative-npu' not allowed"),
    "image-role-null": ({"images": {"roles": {"nginx": 5}}}, "'/images/roles/nginx': got number, want string"),
    "pull-policy": ({"images": {"pullPolicy": "Sometimes"}}, "'/images/pullPolicy': value must be one of"),
    "cpu-quantity": ({"api": {"resources": {"limits": {"cpu": "lots"}}}}, "'/api/resources/limits/cpu'"),
    "unknown-resources-section": ({"operator": {"resources": {"limit": {"cpu": 1}}}},
                                  "additional properties 'limit' not allowed"),
    "port-out-of-range": ({"api": {"service": {"port": 70000}}},
                          "'/api/service/port': maximum: got 70,000, want 65,535"),
    "zero-workers": ({"operator": {"workers": 0}}, "'/operator/workers': minimum: got 0, want 1"),
    "catalog-source-scheme": ({"catalog": {"source": "ftp://catalog.example.com/c.json"}}, "'/catalog/source'"),
    "path-prefix-relative": ({"api": {"external": {"pathPrefix": "inference-api"}}}, "'/api/external/pathPrefix'"),
    "annotation-not-a-string": ({"ingress": {"annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": 600}}},
                                "got number, want string"),
    "toleration-typo": ({"api": {"tolerations": [{"keyy": "x"}]}}, "additional properties 'keyy' not allowed"),
    "authorization-mode": ({"api": {"authorization": {"mode": "magic"}}}, "'/api/authorization/mode'"),
    "root-user": ({"podSecurity": {"runAsUser": 0}}, "'/podSecurity/runAsUser': minimum: got 0, want 1"),
    "env-without-name": ({"operator": {"extraEnv": [{"value": "1"}]}}, "missing property 'name'"),
    "log-level": ({"operator": {"logLevel": "verbose"}}, "'/operator/logLevel': value must be one of"),
    "gateway-ref-without-name": ({"api": {"external": {"gateway": {"parentRefs": [{"namespace": "gw"}]}}}},
                                 "missing property 'name'"),
}

# (values, message): consistent types but an impossible combination, refused by the chart's own checks
COMBINATION_CASES = {
    "no-authentication": ({"apiKey": {"enabled": False}},
                          "apiKey.enabled and entraAuth.enabled are both false: enable at least one"),
    "entra-without-ids": ({"entraAuth": {"enabled": True}},
                          "entraAuth.enabled is true: set entraAuth.tenantId and entraAuth.clientId"),
    "azure-without-scope": ({"entraAuth": ENTRA, "api": {"authorization": {"mode": "azure"}}},
                            "api.authorization.mode is azure: set api.authorization.azure.scope"),
    "gateway-without-parent": ({"api": {"exposure": "external", "external": {"via": "gateway"}}},
                               "api.external.via is gateway: set api.external.gateway.parentRefs"),
    "ingress-tls-without-secret": ({"api": {"exposure": "external", "external": {"ingress": {
        "host": "a.example.com", "tls": {"enabled": True}}}}},
        "api.external.ingress.tls.enabled is true: set api.external.ingress.tls.secretName"),
    "pdb-blocks-every-eviction": ({"api": {"podDisruptionBudget": {"enabled": True}}},
                                  "api.podDisruptionBudget.minAvailable must be lower than api.replicas"),
    "renewal-after-expiry": ({"tls": {"certValidityDays": 30, "renewBeforeDays": 30}},
                             "tls.renewBeforeDays must be lower than tls.certValidityDays"),
}


def _through_a_values_file(tmp_path, values):
    """Write the values as a file and read it back with Helm's own values-file parser (`-f`)."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return helm_python.values_from_yaml(path.read_text())


@pytest.mark.parametrize("values,message", SCHEMA_CASES.values(), ids=SCHEMA_CASES.keys())
def test_invalid_values_are_rejected_by_the_schema(tmp_path, values, message):
    values = _through_a_values_file(tmp_path, values)
    with pytest.raises(helm_python.HelmValuesError) as info:
        helm.render(values)
    text = str(info.value)
    assert "values don't meet the specifications of the schema" in text
    assert message in text, text
    report = helm.lint(values)
    assert any(message in problem for problem in report["errors"]), report


@pytest.mark.parametrize("values,message", COMBINATION_CASES.values(), ids=COMBINATION_CASES.keys())
def test_inconsistent_values_are_refused_with_a_message(tmp_path, values, message):
    values = _through_a_values_file(tmp_path, values)
    with pytest.raises(helm_python.HelmError) as info:
        helm.render(values)
    assert message in str(info.value), str(info.value)


# --- the schema itself -----------------------------------------------------------------------------------------
# Kubernetes objects passed through verbatim (the apiserver validates them); only their top-level keys are checked
PASSTHROUGH = {"nodeAffinity", "podAffinity", "podAntiAffinity", "secretKeyRef", "configMapKeyRef", "fieldRef",
               "resourceFieldRef", "global"}


def _walk(node, path=()):
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, path + (name,))
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], path + ("*",))
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], path + ("[]",))


def test_every_object_in_the_schema_is_closed():
    for path, node in _walk(SCHEMA):
        types = node.get("type")
        if types != "object" and not (isinstance(types, list) and "object" in types):
            continue
        if path and path[-1] in PASSTHROUGH:
            continue
        extra = node.get("additionalProperties")
        assert extra is False or isinstance(extra, dict), f"{'.'.join(path)}: additionalProperties must be closed"
        if extra is False:
            assert node.get("properties"), ".".join(path)


def _default_leaves(values, path=()):
    for name, value in values.items():
        if isinstance(value, dict) and value and name not in ("annotations",):
            yield from _default_leaves(value, path + (name,))
        else:
            yield path + (name,), value


def test_schema_and_values_yaml_describe_the_same_keys():
    values = helm.chart_values()

    def keys_of(v, prefix=()):
        out = set()
        for k, child in v.items():
            out.add(prefix + (k,))
            if isinstance(child, dict) and k not in ("annotations", "roleTable"):
                out |= keys_of(child, prefix + (k,))
        return out

    def schema_keys(node, prefix=()):
        out = set()
        for k, child in (node.get("properties") or {}).items():
            if k == "global" and not prefix:
                continue
            out.add(prefix + (k,))
            if child.get("additionalProperties") is False and k not in PASSTHROUGH and k != "roleTable" and \
                    prefix + (k,) not in {("api", "resources"), ("operator", "resources"),
                                          ("api", "affinity"), ("operator", "affinity")}:
                out |= schema_keys(child, prefix + (k,))
        return out

    assert keys_of(values) == schema_keys(SCHEMA)
    for path, node in _walk(SCHEMA):
        if node.get("additionalProperties") is False and path and path[-1] not in PASSTHROUGH and \
                "[]" not in path and path[-1] not in ("resources", "affinity", "roleTable"):
            assert set(node.get("required", [])) == set(node["properties"]), f"{'.'.join(path)}: every key required"


WRONG = {bool: "true", int: "1", float: "0.5", str: 12, list: "a", dict: "a"}


@pytest.mark.parametrize("path,value", list(_default_leaves(helm.chart_values())),
                         ids=[".".join(p) for p, _ in _default_leaves(helm.chart_values())])
def test_a_wrong_type_for_any_key_fails(path, value):
    values = copy.deepcopy(helm.chart_values())
    node = values
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = WRONG[type(value)]
    with helm_python.Chart.load(helm.CHART) as chart, pytest.raises(helm_python.HelmValuesError) as info:
        chart.validate_schema(values)
    where = "/" + "/".join(path)
    assert where in str(info.value), str(info.value)
