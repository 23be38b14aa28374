"""The chart's CRDs on the real apiserver: accepted, named as the contract says, printing the right columns."""
import json

import kubernetes
import pytest

pytestmark = pytest.mark.integration

EXPECTED = {"models.foundrylocal.azure.com": ("Model", ["mdl"]),
            "modeldeployments.foundrylocal.azure.com": ("ModelDeployment", ["mdep"]),
            "inferenceservices.foundrylocal.azure.com": ("InferenceService", None),
            "storemodels.foundrylocal.azure.com": ("StoreModel", ["sm"])}


def test_crds_are_established_with_their_names(kube):
    api = kubernetes.client.ApiextensionsV1Api(kube.api_client())
    for name, (kind, short) in EXPECTED.items():
        crd = api.read_custom_resource_definition(name)
        assert crd.spec.group == "foundrylocal.azure.com" and crd.spec.names.kind == kind
        assert [v.name for v in crd.spec.versions] == ["v1"]
        if short:
            assert set(short) <= set(crd.spec.names.short_names or [])
        assert crd.spec.versions[0].subresources.status is not None


def test_modeldeployment_table_has_state_ready_endpoint_age(kube, kube_store, kube_namespace):
    kube_store.create({"apiVersion": "foundrylocal.azure.com/v1", "kind": "ModelDeployment",
                       "metadata": {"name": "phi", "namespace": kube_namespace},
                       "spec": {"model": {"ref": "phi"}, "compute": "cpu"}})
    kube_store.patch_status("ModelDeployment", kube_namespace, "phi",
                            {"state": "Running", "readyReplicas": 1, "internalEndpoint": "https://phi:8443"})
    client = kube.api_client()
    path = f"/apis/foundrylocal.azure.com/v1/namespaces/{kube_namespace}/modeldeployments"
    method, url, headers, body, post = client.param_serialize(
        "GET", path, header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"])
    table = json.loads(client.call_api(method, url, header_params=headers).read())
    columns = [c["name"] for c in table["columnDefinitions"] if c.get("priority", 0) == 0]
    assert columns[1:] == ["State", "Ready", "Endpoint", "Age"]
    row = table["rows"][0]["cells"]
    assert row[:4] == ["phi", "Running", 1, "https://phi:8443"]


def _scale_call(kube, method, path, body=None):
    client = kube.api_client()
    method, url, headers, body, _post = client.param_serialize(
        method, path, body=body, header_params={"Accept": "application/json", "Content-Type": "application/json"},
        auth_settings=["BearerToken"])
    return json.loads(client.call_api(method, url, header_params=headers, body=body).read())


@pytest.mark.parametrize("kind, plural, spec", [
    ("ModelDeployment", "modeldeployments", {"model": {"ref": "phi"}, "compute": "cpu", "replicas": 1}),
    ("InferenceService", "inferenceservices", {"modelSource": {"foundry": {"name": "phi"}}, "hardware": "cpu"}),
])
def test_scale_subresource_reads_status_and_writes_spec_replicas(kube, kube_store, kube_namespace, kind, plural,
                                                                  spec):
    """What `kubectl scale` and an HPA call: GET/PUT .../scale on the real apiserver."""
    kube_store.create({"apiVersion": "foundrylocal.azure.com/v1", "kind": kind,
                       "metadata": {"name": "phi", "namespace": kube_namespace}, "spec": spec})
    selector = "app.kubernetes.io/managed-by=foundry-local-operator"
    kube_store.patch_status(kind, kube_namespace, "phi", {"replicas": 1, "selector": selector})
    path = f"/apis/foundrylocal.azure.com/v1/namespaces/{kube_namespace}/{plural}/phi/scale"
    scale = _scale_call(kube, "GET", path)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1
    assert scale["status"] == {"replicas": 1, "selector": selector}
    scale["spec"]["replicas"] = 4
    assert _scale_call(kube, "PUT", path, scale)["spec"]["replicas"] == 4
    assert kube_store.get(kind, kube_namespace, "phi")["spec"]["replicas"] == 4
    scale["spec"]["replicas"] = 101
    scale["metadata"].pop("resourceVersion")
    refused = _scale_call(kube, "PUT", path, scale)     # the CRD's bounds hold through the subresource too
    assert refused["code"] == 422 and refused["details"]["causes"][0]["field"] == "spec.replicas"
    assert kube_store.get(kind, kube_namespace, "phi")["spec"]["replicas"] == 4
