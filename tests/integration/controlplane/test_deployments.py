"""Deployments API on both stores: the reference's examples verbatim, every failure path, pagination."""
import pytest

REFERENCE_CREATE = """{
  "name": "phi4-mini-deploy",
  "spec": {
    "model": { "catalog": { "name": "phi-4-mini", "version": "latest" } },
    "compute": "cpu",
    "workloadType": "generative",
    "replicas": 2,
    "resources": {
      "requests": { "cpu": "2000m", "memory": "4Gi" },
      "limits": { "cpu": "4000m", "memory": "8Gi" }
    },
    "authentication": { "enabled": true }
  }
}"""
REFERENCE_PATCH = """{
  "replicas": 3,
  "resources": {
    "limits": { "cpu": "8000m", "memory": "16Gi" }
  }
}"""
STATUS_FIELDS = {"state", "message", "replicas", "desiredReplicas", "lastScaling", "readyReplicas", "deploymentReady",
                 "serviceReady", "internalEndpoint",
                 "externalEndpoint", "resolvedModel", "authentication", "conditions", "observedGeneration"}
JSON = {"Content-Type": "application/json"}


def create(cp, name, ns=None, **spec):
    body = {"name": name, "spec": {"model": {"ref": "some-model"}, "compute": "cpu", **spec}}
    resp = cp.api("POST", f"/api/v1/namespaces/{ns or cp.ns}/deployments", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def errors_of(resp):
    body = resp.json()
    return {e["field"]: e["message"] for e in body["details"].get("errors", [])}


def test_reference_create_example_verbatim(cp):
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments", data=REFERENCE_CREATE, headers=JSON)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"] == f"/api/v1/namespaces/{cp.ns}/deployments/phi4-mini-deploy"
    body = resp.json()
    assert body["name"] == "phi4-mini-deploy" and body["namespace"] == cp.ns
    assert body["spec"]["replicas"] == 2 and body["spec"]["port"] == 5000
    assert body["spec"]["resources"]["limits"]["memory"] == "8Gi"
    assert set(body["status"]) == STATUS_FIELDS
    assert body["status"]["conditions"] == [] and body["status"]["state"] is None
    got = cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/phi4-mini-deploy").json()
    assert got["spec"] == body["spec"]


def test_reference_patch_example_verbatim_merges_resources(cp):
    cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments", data=REFERENCE_CREATE, headers=JSON)
    resp = cp.api("PATCH", f"/api/v1/namespaces/{cp.ns}/deployments/phi4-mini-deploy", data=REFERENCE_PATCH,
                  headers=JSON)
    assert resp.status_code == 200, resp.text
    spec = resp.json()["spec"]
    assert spec["replicas"] == 3
    assert spec["resources"]["limits"] == {"cpu": "8000m", "memory": "16Gi"}
    assert spec["resources"]["requests"] == {"cpu": "2000m", "memory": "4Gi"}


@pytest.mark.parametrize("patch, field", [
    ({"model": {"ref": "other"}}, "model"),
    ({"authentication": {"enabled": False}}, "authentication"),
    ({"compute": "gpu"}, "compute"),
    ({"spec": {"replicas": 2}}, "spec"),
    ({"replicas": 0}, "replicas"),
    ({"replicas": "3"}, "replicas"),
    ({"env": [{"value": "x"}]}, "env[0].name"),
])
def test_patch_restrictions_name_the_field_and_change_nothing(cp, patch, field):
    before = create(cp, "phi", replicas=1)
    resp = cp.api("PATCH", f"/api/v1/namespaces/{cp.ns}/deployments/phi", json=patch)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "ValidationError"
    assert field in errors_of(resp)
    assert cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/phi").json()["spec"] == before["spec"]


def test_patch_env_and_endpoint(cp):
    create(cp, "phi")
    resp = cp.api("PATCH", f"/api/v1/namespaces/{cp.ns}/deployments/phi",
                  json={"env": [{"name": "LOG", "value": "debug"}], "endpoint": {"enabled": True, "host": "a.b.io"}})
    assert resp.status_code == 200, resp.text
    spec = resp.json()["spec"]
    assert spec["env"] == [{"name": "LOG", "value": "debug"}]
    assert spec["endpoint"]["enabled"] is True and spec["endpoint"]["pathType"] == "ImplementationSpecific"


def test_put_replaces_the_spec(cp):
    create(cp, "phi", replicas=4, displayName="old")
    body = {"name": "phi", "spec": {"model": {"catalog": {"name": "phi-4-mini"}}, "compute": "cpu"}}
    resp = cp.api("PUT", f"/api/v1/namespaces/{cp.ns}/deployments/phi", json=body)
    assert resp.status_code == 200, resp.text
    spec = resp.json()["spec"]
    assert spec["replicas"] == 1 and "displayName" not in spec and spec["model"]["catalog"]["name"] == "phi-4-mini"
    mismatch = cp.api("PUT", f"/api/v1/namespaces/{cp.ns}/deployments/phi", json={**body, "name": "other"})
    assert mismatch.status_code == 400 and "name" in errors_of(mismatch)
    missing = cp.api("PUT", f"/api/v1/namespaces/{cp.ns}/deployments/ghost", json={**body, "name": "ghost"})
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"


def test_delete_answers_202_then_not_found(cp):
    create(cp, "phi")
    resp = cp.api("DELETE", f"/api/v1/namespaces/{cp.ns}/deployments/phi")
    assert resp.status_code == 202
    assert resp.json() == {"status": "deleting", "name": "phi", "namespace": cp.ns}
    assert cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/phi").status_code == 404
    assert cp.api("DELETE", f"/api/v1/namespaces/{cp.ns}/deployments/phi").status_code == 404


def test_duplicate_is_conflict(cp):
    create(cp, "phi")
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments",
                  json={"name": "phi", "spec": {"model": {"ref": "m"}, "compute": "cpu"}})
    assert resp.status_code == 409 and resp.json()["error"] == "Conflict"


@pytest.mark.parametrize("body, field", [
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "tpu"}}, "spec.compute"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}}}, "spec.compute"),
    ({"name": "ok", "spec": {"compute": "cpu"}}, "spec.model"),
    ({"name": "ok", "spec": {"model": {}, "compute": "cpu"}}, "spec.model"),
    ({"name": "ok", "spec": {"model": {"ref": "m", "catalog": {"name": "x"}}, "compute": "cpu"}}, "spec.model"),
    ({"name": "Not_A_Label", "spec": {"model": {"ref": "m"}, "compute": "cpu"}}, "name"),
    ({"name": "x" * 64, "spec": {"model": {"ref": "m"}, "compute": "cpu"}}, "name"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu", "replicas": 101}}, "spec.replicas"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu", "port": 80}}, "spec.port"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu", "replicas": 2.5}}, "spec.replicas"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu", "displayName": "x" * 257}},
     "spec.displayName"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "gpu"}}, "spec.resources.limits.gpu"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "gpu", "resources": {"limits": {"gpu": 9}}}},
     "spec.resources.limits.gpu"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "gpu", "skipGpuResource": True}},
     "spec.nodeSelector"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu", "runtime": "vllm"}}, "spec.compute"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "gpu", "runtime": "vllm",
                             "resources": {"limits": {"gpu": 1}}, "vllm": {"preferences": {"hf_token": "x"}}}},
     "spec.vllm.preferences"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu", "surprise": 1}}, "spec.surprise"),
    ({"name": "ok", "extra": 1, "spec": {"model": {"ref": "m"}, "compute": "cpu"}}, "extra"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu", "resources": {"limits": {"cpu": "lots"}}}},
     "spec.resources.limits.cpu"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu", "tolerations": [{"effect": "Maybe"}]}},
     "spec.tolerations[0].effect"),
    ({"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu", "authentication": {"enabled": "yes"}}},
     "spec.authentication.enabled"),
])
def test_bad_bodies_are_400_with_the_field(cp, body, field):
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments", json=body)
    assert resp.status_code == 400, resp.text
    payload = resp.json()
    assert payload["error"] == "ValidationError" and payload["message"]
    assert field in errors_of(resp), payload
    assert cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments").json()["deployments"] == []


@pytest.mark.parametrize("name", ["FOUNDRY_ENTRA_AUTHORITY", "FOUNDRY_AUTHZ", "FOUNDRY_AUTHZ_ROLES",
                                  "FOUNDRY_ADMIN_KEY_FILE", "foundry_auth_mode", "LD_PRELOAD", "LD_LIBRARY_PATH",
                                  "PYTHONPATH", "PYTHONSTARTUP", "PATH", "SSL_CERT_FILE", "HTTPS_PROXY", "https_proxy"])
def test_attack_spec_env_cannot_reconfigure_the_server(cp, name):
    env = [{"name": "FINE", "value": "1"}, {"name": name, "value": "https://attacker.example"}]
    body = {"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu", "env": env}}
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments", json=body)
    assert resp.status_code == 400 and name in errors_of(resp)["spec.env[1].name"], resp.text
    assert cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments",
                  json={"name": "ok", "spec": {"model": {"ref": "m"}, "compute": "cpu"}}).status_code == 201
    patch = cp.api("PATCH", f"/api/v1/namespaces/{cp.ns}/deployments/ok", json={"env": env})
    assert patch.status_code == 400 and "env[1].name" in str(patch.json()), patch.text


def test_tracing_is_the_one_foundry_setting_a_deployment_sets(cp):
    env = [{"name": "FOUNDRY_TRACING", "value": "on"}, {"name": "OTEL_SERVICE_NAME", "value": "mine"}]
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments",
                  json={"name": "traced", "spec": {"model": {"ref": "m"}, "compute": "cpu", "env": env}})
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("option", ["host", "port", "model", "served-model-name", "served_model_name", "mod", "api-key",
                                    "tokenizer", "download_dir", "load-format", "middleware", "chat_template",
                                    "enable_lora", "--host", "HOST"])
def test_attack_vllm_preferences_are_an_allowlist(cp, option):
    vllm = {"model": {"ref": "m"}, "compute": "gpu", "runtime": "vllm", "resources": {"limits": {"gpu": 1}}}
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments", json={"name": "v", "spec": {
        **vllm, "vllm": {"preferences": {"max_model_len": 4096, option: "0.0.0.0"}}}})
    assert resp.status_code == 400 and option in errors_of(resp)["spec.vllm.preferences"], resp.text
    ok = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments", json={"name": "v", "spec": {
        **vllm, "vllm": {"preferences": {"max-model-len": 4096, "enforce_eager": True}}}})
    assert ok.status_code == 201, ok.text


def test_enum_error_message_matches_the_reference(cp):
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments",
                  json={"name": "x", "spec": {"model": {"ref": "m"}, "compute": "tpu"}})
    assert errors_of(resp)["spec.compute"].startswith("value is not a valid enumeration member")


@pytest.mark.parametrize("data, content_type", [
    ("{not json", "application/json"), ("[1, 2]", "application/json"), ("", "application/json"),
    ("\xff\xfe", "application/json"), ("null", "application/json")])
def test_malformed_bodies_are_400(cp, data, content_type):
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments", data=data.encode("latin-1"),
                  headers={"Content-Type": content_type})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "ValidationError"


def test_oversized_body_is_413(cp):
    body = '{"name": "x", "spec": {"displayName": "' + "a" * (2 * 1024 * 1024) + '"}}'
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments", data=body, headers=JSON)
    assert resp.status_code == 413
    assert resp.json()["error"] == "PayloadTooLarge"


@pytest.mark.parametrize("path", ["/api/v1/namespaces/Bad_NS/deployments",
                                  "/api/v1/namespaces/x/deployments/Bad%20Name",
                                  "/api/v1/namespaces/" + "a" * 64 + "/deployments"])
def test_bad_path_names_are_400(cp, path):
    resp = cp.api("GET", path)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "ValidationError"


@pytest.mark.parametrize("query, field", [("limit=abc", "limit"), ("limit=0", "limit"), ("limit=100000", "limit"),
                                          ("limit=5&continue=%%%garbage", "continue")])
def test_bad_list_parameters_are_400(cp, query, field):
    resp = cp.api("GET", f"/api/v1/deployments?{query}")
    assert resp.status_code == 400, resp.text
    assert field in errors_of(resp)


def test_inline_custom_registry_is_ssrf_checked(cp):
    spec = {"model": {"custom": {"registry": "169.254.169.254", "repository": "m", "tag": "v1"}}, "compute": "cpu"}
    resp = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments", json={"name": "x", "spec": spec})
    assert resp.status_code == 400
    assert "spec.model.custom.registry" in errors_of(resp)


def test_cursor_pagination_over_250_deployments_in_several_namespaces(cp):
    namespaces = [cp.ns, cp.other_ns, cp.new_namespace(cp.ns + "-c")]
    expected = set()
    for i in range(252):
        ns = namespaces[i % 3]
        create(cp, f"d-{i:03d}", ns=ns)
        expected.add((ns, f"d-{i:03d}"))
    seen, token, pages = [], None, 0
    while True:
        url = "/api/v1/deployments?limit=40" + (f"&continue={token}" if token else "")
        body = cp.api("GET", url).json()
        pages += 1
        assert len(body["deployments"]) <= 40
        seen += [(d["namespace"], d["name"]) for d in body["deployments"]]
        token = body["continueToken"]
        if token is None:
            break
    assert pages >= 7
    mine = [s for s in seen if s in expected]
    assert len(mine) == 252 and set(mine) == expected
    per_ns = cp.api("GET", f"/api/v1/namespaces/{cp.other_ns}/deployments?limit=500").json()
    assert len(per_ns["deployments"]) == 84 and per_ns["continueToken"] is None


def test_a_catalog_model_is_stored_with_the_workload_type_that_runs(cp):
    """The catalog's task decides: the iris sample (task classification) is stored as predictive, not the CRD's
    default generative; a chat model stays generative; a contradicting workloadType is refused naming the field."""
    iris = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments",
                  json={"name": "iris", "spec": {"model": {"catalog": {"name": "iris-classifier"}}, "compute": "cpu"}})
    assert iris.status_code == 201, iris.text
    assert iris.json()["spec"]["workloadType"] == "predictive"
    assert cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/iris").json()["spec"]["workloadType"] == "predictive"
    phi = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments",
                 json={"name": "phi", "spec": {"model": {"catalog": {"name": "phi-4-mini"}}, "compute": "cpu"}})
    assert phi.status_code == 201 and phi.json()["spec"]["workloadType"] == "generative"
    wrong = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments",
                   json={"name": "iris2", "spec": {"model": {"catalog": {"name": "iris-classifier"}}, "compute": "cpu",
                                                   "workloadType": "generative"}})
    assert wrong.status_code == 400 and "spec.workloadType" in errors_of(wrong), wrong.text
    assert "predictive" in wrong.text
    assert cp.api("GET", f"/api/v1/namespaces/{cp.ns}/deployments/iris2").status_code == 404
    put = cp.api("PUT", f"/api/v1/namespaces/{cp.ns}/deployments/iris",
                 json={"name": "iris", "spec": {"model": {"catalog": {"name": "iris-classifier"}}, "compute": "cpu",
                                                "replicas": 2}})
    assert put.status_code == 200 and put.json()["spec"]["workloadType"] == "predictive"
    unknown = cp.api("POST", f"/api/v1/namespaces/{cp.ns}/deployments",
                     json={"name": "later", "spec": {"model": {"catalog": {"name": "not-synced-yet"}},
                                                     "compute": "cpu"}})
    assert unknown.status_code == 201, unknown.text     # the operator reports it (ModelNotFound) and re-checks later
