"""The embedded store's structural-schema engine against the chart's CRDs."""

import copy
from pathlib import Path

import pytest

from foundry_inference.store.schema import CrdSchema, load_crds

pytestmark = pytest.mark.unit

CRD_DIR = Path(__file__).resolve().parents[2] / "charts" / "foundry-inference" / "crds"
GROUP = "foundrylocal.azure.com"

# The reference's create-deployment example (POST /api/v1/namespaces/default/deployments).
PHI4_SPEC = {
    "model": {"catalog": {"name": "phi-4-mini", "version": "latest"}},
    "compute": "cpu",
    "workloadType": "generative",
    "replicas": 2,
    "resources": {
        "requests": {"cpu": "2000m", "memory": "4Gi"},
        "limits": {"cpu": "4000m", "memory": "8Gi"},
    },
    "authentication": {"enabled": True},
}


@pytest.fixture(scope="module")
def crds():
    return load_crds(CRD_DIR)


@pytest.fixture(scope="module")
def mdep(crds):
    return CrdSchema(crds[(GROUP, "ModelDeployment")])


def deployment(spec=None, name="phi4-mini-deploy", **extra):
    obj = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": copy.deepcopy(PHI4_SPEC if spec is None else spec),
    }
    obj.update(extra)
    return obj


def with_spec(**changes):
    spec = copy.deepcopy(PHI4_SPEC)
    spec.update(changes)
    return deployment(spec)


def fields(causes):
    return {(c["field"], c["reason"]) for c in causes}


# ---- loading and names ----------------------------------------------------------------------------------------------

def test_load_crds_finds_the_four_kinds(crds):
    assert set(crds) == {(GROUP, k) for k in ("Model", "ModelDeployment", "InferenceService", "StoreModel")}


@pytest.mark.parametrize(
    "kind, plural, short",
    [
        ("Model", "models", ["mdl"]),
        ("ModelDeployment", "modeldeployments", ["mdep"]),
        ("InferenceService", "inferenceservices", ["isvc"]),
        ("StoreModel", "storemodels", ["sm"]),
    ],
)
def test_names_and_status_subresource(crds, kind, plural, short):
    schema = CrdSchema(crds[(GROUP, kind)])
    assert (schema.kind, schema.plural, schema.group, schema.short_names) == (kind, plural, GROUP, short)
    assert schema.has_status_subresource
    assert schema.namespaced


def test_unknown_version_is_refused(crds):
    with pytest.raises(ValueError):
        CrdSchema(crds[(GROUP, "Model")], version="v9")


def test_no_cel_rules_anywhere():
    for path in CRD_DIR.glob("*.yaml"):
        assert "x-kubernetes-validations" not in path.read_text(), path.name


# ---- valid objects and defaults -------------------------------------------------------------------------------------

def test_reference_example_is_valid_and_defaulted(mdep):
    obj = deployment()
    assert mdep.admit(obj) == []
    spec = obj["spec"]
    assert spec["replicas"] == 2  # given values are kept
    assert spec["port"] == 5000
    assert spec["runtime"] == "onnx-genai"
    assert spec["skipGpuResource"] is False
    assert spec["authentication"] == {"enabled": True}
    assert "endpoint" not in spec  # nested defaults only when the parent exists
    assert "vllm" not in spec


def test_minimal_spec_gets_every_top_level_default(mdep):
    obj = deployment({"model": {"ref": "my-model"}, "compute": "gpu", "resources": {"limits": {"gpu": 1}}})
    assert mdep.admit(obj) == []
    spec = obj["spec"]
    assert (spec["replicas"], spec["port"], spec["workloadType"]) == (1, 5000, "generative")
    assert spec["authentication"] == {"enabled": True}
    assert spec["resources"] == {"limits": {"gpu": 1}}


def test_endpoint_defaults_apply_only_when_endpoint_given(mdep):
    obj = with_spec(endpoint={"host": "models.example.com", "tls": {}})
    assert mdep.admit(obj) == []
    assert obj["spec"]["endpoint"] == {
        "host": "models.example.com",
        "enabled": False,
        "pathType": "ImplementationSpecific",
        "ingressClassName": "nginx",
        "tls": {"enabled": False},
    }


def test_catalog_version_and_credential_keys_are_defaulted(mdep):
    obj = with_spec(model={"catalog": {"name": "phi-4-mini"}})
    assert mdep.admit(obj) == []
    assert obj["spec"]["model"]["catalog"]["version"] == "latest"
    custom = {"registry": "myacr.azurecr.io", "repository": "models/m", "tag": "v1",
              "credentials": {"secretRef": {"name": "reg"}}}
    obj = with_spec(model={"custom": custom})
    assert mdep.admit(obj) == []
    assert obj["spec"]["model"]["custom"]["credentials"]["secretRef"] == {
        "name": "reg", "usernameKey": "username", "passwordKey": "password"}


def test_vllm_preferences_are_preserved_and_cache_size_defaulted(mdep):
    obj = with_spec(compute="gpu", runtime="vllm",
                    vllm={"preferences": {"max_model_len": 4096, "nested": {"a": [1, 2]}}})
    assert mdep.admit(obj) == []
    assert obj["spec"]["vllm"] == {"preferences": {"max_model_len": 4096, "nested": {"a": [1, 2]}},
                                   "modelCacheStorageGi": 100}


def test_full_spec_with_every_field_is_valid(mdep):
    obj = with_spec(
        displayName="Phi 4 mini",
        port=8000,
        env=[{"name": "LOG_LEVEL", "value": "debug"}, {"name": "EMPTY"}],
        resources={"requests": {"cpu": 2, "memory": "4Gi", "gpu": 0}, "limits": {"cpu": "4", "memory": 8589934592}},
        nodeSelector={"kubernetes.io/os": "linux"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}],
        endpoint={"enabled": True, "host": "h.example.com", "path": "/x", "pathType": "Prefix",
                  "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "50m"},
                  "tls": {"enabled": True, "secretName": "tls"}},
    )
    assert mdep.admit(obj) == []


def test_unknown_fields_are_pruned_but_root_identity_kept(mdep):
    obj = deployment(bogus=1)
    obj["spec"]["extra"] = "x"
    obj["spec"]["model"]["catalog"]["color"] = "blue"
    obj["spec"]["tolerations"] = [{"key": "k", "operator": "Exists", "junk": True}]
    obj["metadata"]["labels"] = {"a": "b"}
    assert mdep.admit(obj) == []
    assert "bogus" not in obj and "extra" not in obj["spec"]
    assert obj["spec"]["model"]["catalog"] == {"name": "phi-4-mini", "version": "latest"}
    assert obj["spec"]["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert obj["apiVersion"] == f"{GROUP}/v1" and obj["kind"] == "ModelDeployment"
    assert obj["metadata"]["labels"] == {"a": "b"}


def test_non_nullable_null_is_defaulted_or_dropped(mdep):
    obj = with_spec(replicas=None, displayName=None)
    assert mdep.admit(obj) == []
    assert obj["spec"]["replicas"] == 1
    assert "displayName" not in obj["spec"]


def test_status_fields_may_be_null(mdep):
    status = {key: None for key in ("state", "message", "readyReplicas", "deploymentReady", "serviceReady",
                                    "internalEndpoint", "externalEndpoint", "resolvedModel", "authentication",
                                    "observedGeneration")}
    status["conditions"] = []
    obj = deployment(status=copy.deepcopy(status))
    assert mdep.admit(obj) == []
    assert obj["status"] == status


def test_status_with_values_is_valid(mdep):
    obj = deployment(status={
        "state": "Running", "readyReplicas": 2, "deploymentReady": True, "serviceReady": True,
        "internalEndpoint": "https://127.0.0.1:30001", "externalEndpoint": None,
        "resolvedModel": {"name": "Phi-4-mini-instruct-generic-cpu:5", "variant": "generic-cpu", "image": None},
        "authentication": {"keysSecretName": "phi4-mini-deploy-api-keys",
                           "primaryKeyCreatedAt": "2024-01-15T10:00:00Z"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "",
                        "lastTransitionTime": "2024-01-15T10:00:00Z", "observedGeneration": 1}],
        "observedGeneration": 1,
    })
    assert mdep.admit(obj) == []


# ---- invalid objects ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "changes, field, reason",
    [
        ({"replicas": 0}, "spec.replicas", "FieldValueInvalid"),
        ({"replicas": 101}, "spec.replicas", "FieldValueInvalid"),
        ({"port": 80}, "spec.port", "FieldValueInvalid"),
        ({"port": 65536}, "spec.port", "FieldValueInvalid"),
        ({"compute": "tpu"}, "spec.compute", "FieldValueNotSupported"),
        ({"workloadType": "batch"}, "spec.workloadType", "FieldValueNotSupported"),
        ({"runtime": "tgi"}, "spec.runtime", "FieldValueNotSupported"),
        ({"displayName": "x" * 257}, "spec.displayName", "FieldValueInvalid"),
        ({"resources": {"limits": {"gpu": 9}}}, "spec.resources.limits.gpu", "FieldValueInvalid"),
        ({"resources": {"limits": {"gpu": 0}}}, "spec.resources.limits.gpu", "FieldValueInvalid"),
        ({"resources": {"requests": {"memory": "lots"}}}, "spec.resources.requests.memory", "FieldValueInvalid"),
        ({"resources": {"requests": {"cpu": 0.5}}}, "spec.resources.requests.cpu", "FieldValueTypeInvalid"),
        ({"replicas": "2"}, "spec.replicas", "FieldValueTypeInvalid"),
        ({"replicas": True}, "spec.replicas", "FieldValueTypeInvalid"),
        ({"compute": 1}, "spec.compute", "FieldValueTypeInvalid"),
        ({"env": {"name": "A"}}, "spec.env", "FieldValueTypeInvalid"),
        ({"env": [{"value": "v"}]}, "spec.env[0].name", "FieldValueRequired"),
        ({"env": [{"name": "A"}, {"name": ""}]}, "spec.env[1].name", "FieldValueInvalid"),
        ({"nodeSelector": {"foo": 1}}, "spec.nodeSelector.foo", "FieldValueTypeInvalid"),
        ({"tolerations": [{"key": "k", "effect": "Sometimes"}]}, "spec.tolerations[0].effect",
         "FieldValueNotSupported"),
        ({"tolerations": [{"key": "k", "operator": "In"}]}, "spec.tolerations[0].operator", "FieldValueNotSupported"),
        ({"endpoint": {"pathType": "Regex"}}, "spec.endpoint.pathType", "FieldValueNotSupported"),
        ({"endpoint": {"enabled": "yes"}}, "spec.endpoint.enabled", "FieldValueTypeInvalid"),
        ({"endpoint": {"annotations": {"a": 5}}}, "spec.endpoint.annotations.a", "FieldValueTypeInvalid"),
        ({"authentication": {"enabled": "true"}}, "spec.authentication.enabled", "FieldValueTypeInvalid"),
        ({"vllm": {"modelCacheStorageGi": 0}}, "spec.vllm.modelCacheStorageGi", "FieldValueInvalid"),
        ({"model": {"catalog": {"version": "1"}}}, "spec.model.catalog.name", "FieldValueRequired"),
        ({"model": {"custom": {"registry": "r.io", "repository": "m"}}}, "spec.model.custom.tag", "FieldValueRequired"),
    ],
)
def test_bad_spec_field_is_reported_at_its_path(mdep, changes, field, reason):
    causes = mdep.admit(with_spec(**changes))
    assert (field, reason) in fields(causes), causes
    assert all(c["message"] for c in causes)


def test_model_with_two_sources_is_invalid(mdep):
    causes = mdep.admit(with_spec(model={"ref": "m", "catalog": {"name": "phi-4-mini"}}))
    assert ("spec.model", "FieldValueInvalid") in fields(causes)
    assert "one and only one" in causes[0]["message"]


def test_model_with_no_source_is_invalid(mdep):
    causes = mdep.admit(with_spec(model={}))
    assert ("spec.model", "FieldValueInvalid") in fields(causes)
    assert "Found none valid" in causes[0]["message"]


def test_missing_required_fields(mdep):
    assert fields(mdep.admit(deployment({"model": {"ref": "m"}}))) == {("spec.compute", "FieldValueRequired")}
    obj = deployment()
    del obj["spec"]
    assert fields(mdep.admit(obj)) == {("spec", "FieldValueRequired")}


def test_enum_message_lists_supported_values(mdep):
    (cause,) = mdep.admit(with_spec(compute="tpu"))
    assert cause == {"field": "spec.compute", "reason": "FieldValueNotSupported",
                     "message": 'Unsupported value: "tpu": supported values: "cpu", "gpu"'}


def test_range_message_names_the_bound(mdep):
    (cause,) = mdep.admit(with_spec(replicas=101))
    assert "less than or equal to 100" in cause["message"]


@pytest.mark.parametrize("name", ["Phi4", "phi_4", "-phi", "phi-", "a" * 64, "phi.4"])
def test_name_must_be_a_dns_label(mdep, name):
    assert ("metadata.name", "FieldValueInvalid") in fields(mdep.admit(deployment(name=name)))


def test_63_char_name_is_fine(mdep):
    assert mdep.admit(deployment(name="a" * 63)) == []


@pytest.mark.parametrize(
    "status, field, reason",
    [
        ({"state": "Sleeping"}, "status.state", "FieldValueNotSupported"),
        ({"readyReplicas": "two"}, "status.readyReplicas", "FieldValueTypeInvalid"),
        ({"conditions": [{"type": "Ready"}]}, "status.conditions[0].status", "FieldValueRequired"),
        ({"conditions": [{"type": "Ready", "status": "Maybe"}]}, "status.conditions[0].status",
         "FieldValueNotSupported"),
        ({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"}]},
         "status.conditions[0].lastTransitionTime", "FieldValueTypeInvalid"),
        ({"conditions": [None]}, "status.conditions[0]", "FieldValueTypeInvalid"),
    ],
)
def test_bad_status_is_reported(mdep, status, field, reason):
    assert (field, reason) in fields(mdep.admit(deployment(status=status)))


# ---- the other kinds ------------------------------------------------------------------------------------------------

def test_model_byo_from_reference_is_valid(crds):
    schema = CrdSchema(crds[(GROUP, "Model")])
    obj = {
        "apiVersion": f"{GROUP}/v1", "kind": "Model", "metadata": {"name": "my-custom-model"},
        "spec": {
            "displayName": "My Custom Model",
            "description": "A custom ONNX model for image classification",
            "source": {"type": "custom", "custom": {
                "registry": "myacr.azurecr.io", "repository": "models/my-model", "tag": "v1.0",
                "credentials": {"secretRef": {"name": "my-registry-secret", "usernameKey": "username",
                                              "passwordKey": "password"}}}},
            "capabilities": {"task": "chat-completion", "contextLength": 4096, "streaming": True},
        },
        "status": {"phase": None, "message": None, "conditions": []},
    }
    assert schema.admit(obj) == []
    obj["spec"]["source"]["type"] = "s3"
    obj["status"]["phase"] = "Ready"
    assert fields(schema.admit(obj)) == {("spec.source.type", "FieldValueNotSupported"),
                                         ("status.phase", "FieldValueNotSupported")}


def test_inference_service_legacy_fields(crds):
    schema = CrdSchema(crds[(GROUP, "InferenceService")])
    obj = {"apiVersion": f"{GROUP}/v1", "kind": "InferenceService", "metadata": {"name": "legacy"},
           "spec": {"modelSource": {"foundry": {"name": "phi-4-mini"}}, "hardware": "cpu",
                    "ingress": {"enabled": True}}}
    assert schema.admit(obj) == []
    spec = obj["spec"]
    assert (spec["inferenceType"], spec["replicas"], spec["port"]) == ("generative", 1, 5000)
    assert spec["modelSource"]["foundry"]["version"] == "latest"
    assert spec["ingress"]["pathType"] == "ImplementationSpecific"
    obj["spec"]["modelSource"]["byo"] = {"registry": "r.io", "repository": "m", "tag": "1"}
    obj["spec"]["hardware"] = "fpga"
    assert fields(schema.admit(obj)) == {("spec.modelSource", "FieldValueInvalid"),
                                         ("spec.hardware", "FieldValueNotSupported")}


def test_store_model(crds):
    schema = CrdSchema(crds[(GROUP, "StoreModel")])
    obj = {"apiVersion": f"{GROUP}/v1", "kind": "StoreModel", "metadata": {"name": "phi-4-mini-generic-cpu-5"},
           "spec": {"modelName": "Phi-4-mini-instruct-generic-cpu:5", "variant": "generic-cpu",
                    "source": {"type": "oci", "registry": "r.io", "repository": "m", "tag": "1"},
                    "storage": {"size": "20Gi"}},
           "status": {"phase": "Storing", "progress": 40, "sizeBytes": 5153960755, "path": None}}
    assert schema.admit(obj) == []
    obj["status"]["progress"] = 101
    obj["spec"]["storage"]["size"] = "big"
    assert fields(schema.admit(obj)) == {("status.progress", "FieldValueInvalid"),
                                         ("spec.storage.size", "FieldValueInvalid")}


# ---- engine details on a hand-made schema ---------------------------------------------------------------------------

def tiny_crd(schema):
    return {"spec": {"group": "example.com", "names": {"kind": "Thing", "plural": "things"},
                     "versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema}}]}}


def test_combinators_and_bounds():
    schema = CrdSchema(tiny_crd({"type": "object", "properties": {
        "n": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1, "exclusiveMaximum": True},
        "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
        "pick": {"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}], "not": {"enum": ["bad"]}},
        "all": {"type": "integer", "allOf": [{"minimum": 2}, {"maximum": 4}]},
        "i": {"type": "integer"},
    }}))
    assert not schema.has_status_subresource
    assert schema.admit({"n": 0.5, "tags": ["x"], "pick": "b1", "all": 3, "i": 2.0}) == []
    causes = schema.admit({"n": 1, "tags": [], "pick": "c", "all": 5, "i": 2.5})
    assert fields(causes) == {("n", "FieldValueInvalid"), ("tags", "FieldValueInvalid"), ("pick", "FieldValueInvalid"),
                              ("all", "FieldValueInvalid"), ("i", "FieldValueTypeInvalid")}
    assert fields(schema.admit({"tags": ["a", "b", "c"], "pick": "bad"})) == {("tags", "FieldValueInvalid"),
                                                                              ("pick", "FieldValueInvalid")}


def test_preserve_unknown_fields_still_prunes_and_defaults_known_children():
    schema = CrdSchema(tiny_crd({"type": "object", "properties": {"spec": {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True,
        "properties": {"inner": {"type": "object", "properties": {"a": {"type": "string", "default": "x"}}}}}}}))
    obj = {"spec": {"free": {"any": 1}, "inner": {"drop": 1}}}
    assert schema.admit(obj) == []
    assert obj == {"spec": {"free": {"any": 1}, "inner": {"a": "x"}}}
