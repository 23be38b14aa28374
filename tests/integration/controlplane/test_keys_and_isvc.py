"""API keys (read, rotate, disabled, missing) and legacy InferenceServices, on both stores."""
import base64
import datetime
import re

import pytest

ISVC = {"name": "legacy", "spec": {"inferenceType": "predictive", "hardware": "cpu",
                                   "modelSource": {"foundry": {"name": "iris-classifier"}}, "replicas": 2,
                                   "ingress": {"enabled": True, "host": "legacy.example.com"}}}


def deploy(cp, name, auth=True):
    body = {"name": name, "spec": {"model": {"ref": "m"}, "compute": "cpu", "authentication": {"enabled": auth}}}
    assert cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments", json=body).status_code == 201


def operator_keys(cp, name):
    """The Secret exactly as the operator writes it."""
    owner = cp.store.get("ModelDeployment", cp.ns, name)
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    cp.store.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {
        "name": f"{name}-api-keys", "namespace": cp.ns,
        "labels": {"app.kubernetes.io/managed-by": "inference-operator", "foundry.azure.com/deployment": name},
        "annotations": {"foundry.azure.com/primary-key-created-at": "2024-01-15T10:00:00Z",
                        "foundry.azure.com/secondary-key-created-at": "2024-01-15T10:00:00Z"},
        "ownerReferences": [{"apiVersion": owner["apiVersion"], "kind": "ModelDeployment", "name": name,
                             "uid": owner["metadata"]["uid"], "controller": True}]},
        "data": {"primary-key": b64("fndry-pk-a1b2c3d4-e5f6-7890-abcd-ef1234567890"),
                 "secondary-key": b64("fndry-sk-f1e2d3c4-b5a6-0987-dcba-1234567890ef")}})


def test_keys_match_the_reference_shape(cp):
    deploy(cp, "phi4-mini-deploy")
    operator_keys(cp, "phi4-mini-deploy")
    resp = cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/phi4-mini-deploy/keys")
    assert resp.status_code == 200
    assert resp.json() == {
        "deploymentName": "phi4-mini-deploy", "namespace": cp.ns,
        "primaryKey": {"value": "fndry-pk-a1b2c3d4-e5f6-7890-abcd-ef1234567890", "createdAt": "2024-01-15T10:00:00Z"},
        "secondaryKey": {"value": "fndry-sk-f1e2d3c4-b5a6-0987-dcba-1234567890ef",
                         "createdAt": "2024-01-15T10:00:00Z"}}


def test_rotate_replaces_one_key_with_64_hex_and_keeps_the_other(cp):
    deploy(cp, "phi")
    operator_keys(cp, "phi")
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments/phi/keys/primary/rotate")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["keyType"] == "primary" and body["deploymentName"] == "phi" and body["namespace"] == cp.ns
    assert re.fullmatch(r"[0-9a-f]{64}", body["key"]["value"])
    # from when every replica accepts it: the platform's propagation bound (5 s by default) after its creation
    created, effective = (datetime.datetime.strptime(body["key"][k], "%Y-%m-%dT%H:%M:%SZ")
                          for k in ("createdAt", "effectiveAt"))
    assert datetime.timedelta(seconds=4) <= effective - created <= datetime.timedelta(seconds=6)
    keys = cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/phi/keys").json()
    assert keys["primaryKey"] == {k: body["key"][k] for k in ("value", "createdAt")}
    assert keys["secondaryKey"]["value"] == "fndry-sk-f1e2d3c4-b5a6-0987-dcba-1234567890ef"
    again = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments/phi/keys/secondary/rotate").json()
    assert again["key"]["value"] != body["key"]["value"]


def test_keys_errors(cp):
    deploy(cp, "open", auth=False)
    deploy(cp, "fresh")
    disabled = cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/open/keys")
    assert disabled.status_code == 400 and disabled.json()["error"] == "AuthenticationDisabled"
    rotate_disabled = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments/open/keys/primary/rotate")
    assert rotate_disabled.status_code == 400 and rotate_disabled.json()["error"] == "AuthenticationDisabled"
    not_yet = cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/fresh/keys")
    assert not_yet.status_code == 404 and not_yet.json()["error"] == "NotFound"
    assert cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/ghost/keys").status_code == 404
    bad_type = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments/fresh/keys/tertiary/rotate")
    assert bad_type.status_code == 400 and bad_type.json()["details"]["errors"][0]["field"] == "key_type"


def test_attack_keys_endpoint_neither_reads_nor_rotates_a_secret_it_does_not_control(cp):
    deploy(cp, "phi")
    theirs = cp.store.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {
        "name": "phi-api-keys", "namespace": cp.ns}, "data": {"primary-key": base64.b64encode(b"theirs").decode()}})
    for method, path in (("GET", "keys"), ("POST", "keys/primary/rotate")):
        resp = cp.api(method, f"/api/v1/namespaces/{cp.ns}/deployments/phi/{path}")
        assert resp.status_code == 409 and resp.json()["error"] == "NameConflict", resp.text
        assert "theirs" not in resp.text and "dGhlaXJz" not in resp.text
    after = cp.store.get("Secret", cp.ns, "phi-api-keys")
    assert after["data"] == theirs["data"]
    assert after["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]


def test_inference_service_crud_with_its_own_field_names(cp):
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/inferenceservices", json=ISVC)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"] == f"/api/v1/namespaces/{cp.ns}/inferenceservices/legacy"
    spec = resp.json()["spec"]
    assert spec["hardware"] == "cpu" and spec["inferenceType"] == "predictive" and spec["port"] == 5000
    assert spec["ingress"]["pathType"] == "ImplementationSpecific"
    listed = cp.api("GET", "/api/v1/inferenceservices?limit=10").json()
    assert "inferenceServices" in listed and "continueToken" in listed
    assert (cp.ns, "legacy") in {(i["namespace"], i["name"]) for i in listed["inferenceServices"]}
    patched = cp.api("PATCH", f"/api/v1/namespaces/{cp.ns}/inferenceservices/legacy",
                     json={"replicas": 3, "ingress": {"host": "new.example.com"}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["spec"]["replicas"] == 3 and patched.json()["spec"]["ingress"]["enabled"] is True
    refused = cp.api("PATCH", f"/api/v1/namespaces/{cp.ns}/inferenceservices/legacy", json={"hardware": "gpu"})
    assert refused.status_code == 400
    assert cp.api("DELETE", f"/api/v1/namespaces/{cp.ns}/inferenceservices/legacy").status_code == 202
    assert cp.api("GET", f"/api/v1/namespaces/{cp.ns}/inferenceservices/legacy").status_code == 404


@pytest.mark.parametrize("spec, field", [
    ({"hardware": "cpu"}, "spec.modelSource"),
    ({"hardware": "cpu", "modelSource": {"foundry": {"name": "x"}, "byo": {
        "registry": "a.io", "repository": "r", "tag": "t"}}}, "spec.modelSource"),
    ({"hardware": "quantum", "modelSource": {"foundry": {"name": "x"}}}, "spec.hardware"),
    ({"hardware": "cpu", "modelSource": {"byo": {"registry": "10.1.2.3", "repository": "r", "tag": "t"}}},
     "spec.modelSource.byo.registry"),
    ({"hardware": "gpu", "modelSource": {"foundry": {"name": "x"}}}, "spec.resources.limits.gpu"),
])
def test_bad_inference_services_are_400(cp, spec, field):
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/inferenceservices", json={"name": "x", "spec": spec})
    assert resp.status_code == 400, resp.text
    assert field in {e["field"] for e in resp.json()["details"]["errors"]}
