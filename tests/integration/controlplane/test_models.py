"""Models API on both stores: the unified list, filters, offset pagination, lookups, BYO registration, sync."""
import json

import pytest

from tests.integration.controlplane.conftest import CATALOG

REFERENCE_BYO = """{
  "name": "my-custom-model",
  "displayName": "My Custom Model",
  "description": "A custom ONNX model for image classification",
  "source": {
    "type": "custom",
    "custom": {
      "registry": "myacr.azurecr.io",
      "repository": "models/my-model",
      "tag": "v1.0",
      "credentials": {
        "secretRef": {
          "name": "my-registry-secret",
          "usernameKey": "username",
          "passwordKey": "password"
        }
      }
    }
  },
  "capabilities": {
    "task": "chat-completion",
    "contextLength": 4096,
    "streaming": true
  }
}"""
CATALOG_ENTRIES = len(json.loads(CATALOG.read_text())["models"])
SUMMARY_FIELDS = {"id", "alias", "displayName", "publisher", "description", "license", "task", "source", "framework",
                  "modelVersion", "supportedCompute"}


def errors_of(resp):
    return {e["field"]: e["message"] for e in resp.json()["details"].get("errors", [])}


def register(cp, name="my-custom-model", **overrides):
    body = json.loads(REFERENCE_BYO)
    body["name"] = name
    body.update(overrides)
    resp = cp.api("POST", "/api/v1/models", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_list_has_every_field_and_the_catalog(cp):
    body = cp.api("GET", "/api/v1/models").json()
    assert set(body) == {"models", "total", "count", "hasMore", "limit", "offset", "unfilteredTotal", "version",
                         "lastSync"}
    assert body["total"] == body["count"] == body["unfilteredTotal"] == CATALOG_ENTRIES
    assert body["hasMore"] is False and body["limit"] is None and body["offset"] is None
    assert body["version"] == "2026.11.1" and body["lastSync"] == "2026-11-01T00:00:00Z"
    phi = next(m for m in body["models"] if m["alias"] == "phi-4-mini")
    assert set(phi) == SUMMARY_FIELDS
    assert phi["id"] == "Phi-4-mini-instruct-generic-cpu:5" and phi["supportedCompute"] == ["CPU", "GPU"]
    assert phi["source"] == "foundry-local" and phi["framework"] == "ONNX" and phi["task"] == "chat-completion"


def test_reference_byo_example_verbatim_and_listed_as_custom(cp):
    resp = cp.api("POST", "/api/v1/models", data=REFERENCE_BYO, headers={"Content-Type": "application/json"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"] == "/api/v1/models/custom/my-custom-model"
    detail = resp.json()
    assert detail["source"] == "custom" and detail["modelVersion"] == "v1.0" and detail["task"] == "chat-completion"
    listed = cp.api("GET", "/api/v1/models?source=custom").json()
    assert [m["id"] for m in listed["models"]] == ["my-custom-model"]
    assert listed["unfilteredTotal"] == CATALOG_ENTRIES + 1
    model = cp.store.get("Model", cp.operator_ns, "my-custom-model")
    assert model["metadata"]["labels"]["foundry.azure.com/source"] == "custom"
    got = cp.api("GET", "/api/v1/models/custom/my-custom-model").json()
    assert got["spec"]["source"]["custom"]["registry"] == "myacr.azurecr.io"


@pytest.mark.parametrize("query, expect", [
    ("name=PHI-4", {"phi-4-mini", "phi-4", "Phi-4-mini-instruct"}),
    ("name=generic-cpu:5", {"phi-4-mini"}),
    ("compute=gpu&source=foundry-local", {"phi-4-mini", "phi-4", "phi-3.5-mini", "qwen2.5-coder-0.5b",
                                          "whisper-tiny"}),
    ("compute=GPU&source=foundry", {"Phi-4-mini-instruct"}),
    ("task=AUTOMATIC-SPEECH-RECOGNITION&publisher=openai", {"whisper-tiny", "whisper-base", "whisper-small"}),
    ("task=automatic-speech", set()),
    ("publisher=samples", {"iris-classifier", "smollm2-135m-instruct", "whisper-tiny-en", "all-minilm-l6-v2"}),
    ("compute=npu", set()),
])
def test_filters(cp, query, expect):
    body = cp.api("GET", f"/api/v1/models?{query}").json()
    assert {m["alias"] for m in body["models"]} == expect
    assert body["total"] == len(expect) and body["unfilteredTotal"] == CATALOG_ENTRIES


def test_offset_pagination_like_the_reference(cp):
    for i in range(100):
        register(cp, f"byo-{i:03d}")
    total = CATALOG_ENTRIES + 100
    seen, offset = [], 0
    while True:
        body = cp.api("GET", f"/api/v1/models?limit=20&offset={offset}").json()
        assert body["limit"] == 20 and body["offset"] == offset and body["total"] == total
        seen += [m["id"] for m in body["models"]]
        assert body["count"] == len(body["models"]) == min(20, total - offset)
        offset += 20
        if not body["hasMore"]:
            break
    assert len(seen) == len(set(seen)) == total


@pytest.mark.parametrize("limit, echoed", [("1000", 100), ("0", 1), ("-5", 1), ("7", 7)])
def test_limit_is_clamped(cp, limit, echoed):
    body = cp.api("GET", f"/api/v1/models?limit={limit}").json()
    assert body["limit"] == echoed and body["count"] == min(echoed, CATALOG_ENTRIES)


@pytest.mark.parametrize("query, field", [("compute=tpu", "compute"), ("source=github", "source"),
                                          ("offset=-1", "offset"), ("limit=ten", "limit"), ("offset=x", "offset"),
                                          ("name=" + "a" * 300, "name")])
def test_bad_query_parameters_are_400(cp, query, field):
    resp = cp.api("GET", f"/api/v1/models?{query}")
    assert resp.status_code == 400 and field in errors_of(resp)


def test_get_catalog_models_by_alias_or_id(cp):
    by_alias = cp.api("GET", "/api/v1/models/foundry-local/phi-4-mini").json()
    by_id = cp.api("GET", "/api/v1/models/foundry-local/Phi-4-mini-instruct-cuda-gpu:5").json()
    assert by_alias == by_id
    assert {v["id"] for v in by_alias["variants"]} == {"Phi-4-mini-instruct-generic-cpu:5",
                                                        "Phi-4-mini-instruct-cuda-gpu:5"}
    assert by_alias["variants"][0]["fileSizeBytes"] == 5153960755
    vllm = cp.api("GET", "/api/v1/models/foundry/Phi-4-mini-instruct").json()
    assert vllm["source"] == "foundry" and vllm["framework"] == "vllm"
    assert cp.api("GET", "/api/v1/models/foundry/phi-4-mini").status_code == 404
    assert cp.api("GET", "/api/v1/models/foundry-local/nope").status_code == 404
    assert cp.api("GET", "/api/v1/models/foundry-local/bad%20name").status_code == 400


def test_custom_model_replace_and_delete(cp):
    register(cp)
    body = json.loads(REFERENCE_BYO)
    body["source"]["custom"]["tag"] = "v2.0"
    resp = cp.api("PUT", "/api/v1/models/custom/my-custom-model", json=body)
    assert resp.status_code == 200 and resp.json()["modelVersion"] == "v2.0"
    assert cp.api("PUT", "/api/v1/models/custom/other", json=body).status_code == 400
    gone = cp.api("DELETE", "/api/v1/models/custom/my-custom-model")
    assert gone.status_code == 202
    assert gone.json() == {"status": "deleting", "name": "my-custom-model", "namespace": cp.operator_ns}
    assert cp.api("GET", "/api/v1/models/custom/my-custom-model").status_code == 404
    assert cp.api("DELETE", "/api/v1/models/custom/my-custom-model").status_code == 404


def test_duplicate_custom_model_is_conflict(cp):
    register(cp)
    resp = cp.api("POST", "/api/v1/models", data=REFERENCE_BYO, headers={"Content-Type": "application/json"})
    assert resp.status_code == 409


@pytest.mark.parametrize("mutate, field", [
    (lambda b: b["source"].update(type="foundry-local"), "source.type"),
    (lambda b: b["source"].pop("custom"), "source.custom"),
    (lambda b: b.update(name="Bad Name"), "name"),
    (lambda b: b["capabilities"].update(contextLength="big"), "capabilities.contextLength"),
    (lambda b: b.update(unexpected=True), "unexpected"),
    (lambda b: b["source"]["custom"].update(repository="../../etc"), "source.custom.repository"),
])
def test_bad_custom_models_are_400(cp, mutate, field):
    body = json.loads(REFERENCE_BYO)
    mutate(body)
    resp = cp.api("POST", "/api/v1/models", json=body)
    assert resp.status_code == 400, resp.text
    assert field in errors_of(resp)


SSRF_VECTORS = ["127.0.0.1", "127.0.0.1:5000", "10.0.0.5", "192.168.1.10", "172.16.0.1", "169.254.169.254",
                "[::1]", "[::ffff:127.0.0.1]", "::1", "[fe80::1]", "0.0.0.0", "2130706433", "0x7f000001",
                "0177.0.0.1", "127.1", "localhost", "LOCALHOST.", "registry.localhost", "svc.cluster.local",
                "metadata.google.internal", "registry", "http://myacr.azurecr.io", "myacr.azurecr.io/path",
                "user:pw@myacr.azurecr.io", "224.0.0.1", "myacr.azurecr.io:99999", ""]


@pytest.mark.parametrize("registry", SSRF_VECTORS)
def test_ssrf_vectors_are_rejected(cp, registry):
    body = json.loads(REFERENCE_BYO)
    body["source"]["custom"]["registry"] = registry
    resp = cp.api("POST", "/api/v1/models", json=body)
    assert resp.status_code == 400, registry
    assert "source.custom.registry" in errors_of(resp)


def test_sync_request_is_recorded_for_the_operator(cp):
    resp = cp.api("POST", "/api/v1/models/sync")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "triggered" and body["message"] == "Catalog sync requested"
    cm = cp.store.get("ConfigMap", cp.operator_ns, "foundry-local-catalog")
    assert cm["metadata"]["annotations"]["foundry.azure.com/sync-requested-at"] == body["syncedAt"]
