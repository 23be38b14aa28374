"""spec.autoscaling through the REST API on both stores: stored as given, every hostile value a 400 naming its field
(and nothing stored), PATCH of a subset and `null` back to fixed replicas, the same on InferenceServices."""
import pytest

from .test_deployments import errors_of

BASE = {"model": {"ref": "some-model"}, "compute": "cpu"}
ISVC = {"modelSource": {"foundry": {"name": "phi-4-mini"}}, "hardware": "cpu"}


def post(cp, spec, name="auto", collection="deployments"):
    return cp.api("POST", f"/api/v1/namespaces/{cp.ns}/{collection}", json={"name": name, "spec": spec})


def test_autoscaling_is_stored_with_the_crd_default_min(cp):
    resp = post(cp, {**BASE, "autoscaling": {"maxReplicas": 3, "targetConcurrency": 2}})
    assert resp.status_code == 201, resp.text
    stored = cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/auto").json()
    assert stored["spec"]["autoscaling"] == {"minReplicas": 1, "maxReplicas": 3, "targetConcurrency": 2}
    assert {"replicas", "desiredReplicas", "lastScaling"} <= set(stored["status"])


def test_scale_to_zero_settings_are_accepted(cp):
    scaling = {"minReplicas": 0, "maxReplicas": 2, "targetConcurrency": 1, "scaleDownDelaySeconds": 0,
               "scaleToZeroAfterSeconds": 60}
    resp = post(cp, {**BASE, "autoscaling": scaling})
    assert resp.status_code == 201, resp.text
    assert resp.json()["spec"]["autoscaling"] == scaling


HOSTILE = [
    ({"maxReplicas": "3"}, "maxReplicas"),
    ({"maxReplicas": 3.0}, "maxReplicas"),
    ({"maxReplicas": True}, "maxReplicas"),
    ({"maxReplicas": None}, "maxReplicas"),
    ({"maxReplicas": [3]}, "maxReplicas"),
    ({"maxReplicas": 0}, "maxReplicas"),
    ({"maxReplicas": 101}, "maxReplicas"),
    ({"maxReplicas": 10 ** 40}, "maxReplicas"),
    ({"minReplicas": -1, "maxReplicas": 2}, "minReplicas"),
    ({"minReplicas": 101, "maxReplicas": 100}, "minReplicas"),
    ({"minReplicas": 5, "maxReplicas": 2}, "maxReplicas"),
    ({"minReplicas": 1}, "maxReplicas"),
    ({"maxReplicas": 2, "targetConcurrency": 0}, "targetConcurrency"),
    ({"maxReplicas": 2, "targetConcurrency": -5}, "targetConcurrency"),
    ({"maxReplicas": 2, "targetConcurrency": 2 ** 63}, "targetConcurrency"),
    ({"maxReplicas": 2, "scaleDownDelaySeconds": -1}, "scaleDownDelaySeconds"),
    ({"maxReplicas": 2, "scaleDownDelaySeconds": "30s"}, "scaleDownDelaySeconds"),
    ({"maxReplicas": 2, "scaleToZeroAfterSeconds": 60}, "scaleToZeroAfterSeconds"),
    ({"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfterSeconds": 0}, "scaleToZeroAfterSeconds"),
    ({"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfterSeconds": 10 ** 9}, "scaleToZeroAfterSeconds"),
    ({"maxReplicas": 2, "surprise": 1}, "surprise"),
]


@pytest.mark.parametrize("scaling, field", HOSTILE)
def test_attack_hostile_autoscaling_is_400_naming_the_field(cp, scaling, field):
    resp = post(cp, {**BASE, "autoscaling": scaling})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "ValidationError"
    assert f"spec.autoscaling.{field}" in errors_of(resp), resp.json()
    assert cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments").json()["deployments"] == []


@pytest.mark.parametrize("scaling", ["fast", 3, [], True])
def test_attack_autoscaling_of_the_wrong_type_is_400(cp, scaling):
    resp = post(cp, {**BASE, "autoscaling": scaling})
    assert resp.status_code == 400, resp.text
    assert "spec.autoscaling" in errors_of(resp)


def test_patch_a_subset_then_null_back_to_fixed_replicas(cp):
    assert post(cp, {**BASE, "autoscaling": {"minReplicas": 0, "maxReplicas": 2}}).status_code == 201
    path = f"/api/v1/namespaces/{cp.ns}/deployments/auto"
    resp = cp.api("PATCH", path, json={"autoscaling": {"maxReplicas": 4, "scaleToZeroAfterSeconds": 30}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["spec"]["autoscaling"] == {"minReplicas": 0, "maxReplicas": 4, "scaleToZeroAfterSeconds": 30}
    refused = cp.api("PATCH", path, json={"autoscaling": {"minReplicas": 9}})
    assert refused.status_code == 400, refused.text
    assert set(errors_of(refused)) == {"spec.autoscaling.maxReplicas", "spec.autoscaling.scaleToZeroAfterSeconds"}
    assert cp.api("GET", path).json()["spec"]["autoscaling"]["maxReplicas"] == 4     # nothing changed
    cleared = cp.api("PATCH", path, json={"autoscaling": None, "replicas": 2})
    assert cleared.status_code == 200, cleared.text
    assert "autoscaling" not in cleared.json()["spec"] and cleared.json()["spec"]["replicas"] == 2


def test_attack_patch_autoscaling_field_types(cp):
    assert post(cp, {**BASE, "autoscaling": {"maxReplicas": 2}}).status_code == 201
    resp = cp.api("PATCH", f"/api/v1/namespaces/{cp.ns}/deployments/auto",
                  json={"autoscaling": {"maxReplicas": -3, "extra": True}})
    assert resp.status_code == 400, resp.text
    assert {"autoscaling.maxReplicas", "autoscaling.extra"} <= set(errors_of(resp))


def test_inference_service_maps_autoscaling_too(cp):
    resp = post(cp, {**ISVC, "autoscaling": {"minReplicas": 0, "maxReplicas": 3}}, collection="inferenceservices")
    assert resp.status_code == 201, resp.text
    assert resp.json()["spec"]["autoscaling"]["minReplicas"] == 0
    bad = post(cp, {**ISVC, "autoscaling": {"minReplicas": 4, "maxReplicas": 3}}, name="bad",
               collection="inferenceservices")
    assert bad.status_code == 400 and "spec.autoscaling.maxReplicas" in errors_of(bad)


def test_openapi_documents_autoscaling_and_the_scaled_to_zero_state(cp):
    doc = cp.api("GET", "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    auto = schemas["Autoscaling"]
    assert auto["required"] == ["maxReplicas"]
    assert auto["properties"]["minReplicas"]["minimum"] == 0
    assert "ScaledToZero" in schemas["WorkloadStatus"]["properties"]["state"]["enum"]
