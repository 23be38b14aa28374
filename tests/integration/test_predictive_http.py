"""The predictive server's HTTP contract on a real loopback server: endpoints, every bad input
(docs/predictive-server.md), body and image limits, backpressure (429 + Retry-After + payload), dynamic batching under
concurrency, client disconnects, and authentication through the shared auth module."""
import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from tests.support import models
from tests.unit.predictive.harness import PredictiveServer, body_for, outputs_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["httptools", "tornado"])
def iris_server(request):
    built = models.iris_logreg()
    with PredictiveServer(built.path, frontend=request.param, env={"FOUNDRY_MAX_BODY_BYTES": "65536"}) as server:
        server.built = built
        yield server


def good_request(server):
    response = requests.post(server.url("/v1/predict"), json=body_for([[5.1, 3.5, 1.4, 0.2]]), timeout=10)
    assert response.status_code == 200, response.text
    assert outputs_of(response.json())["label_0"] == [0]


def item(data, content_type="application/json", encoder="base64"):
    return {"items": [{"content_type": content_type, "encoder": encoder, "data": data}]}


def b64(raw):
    return base64.b64encode(raw if isinstance(raw, bytes) else raw.encode()).decode()


def test_probes_and_metadata(iris_server):
    server = iris_server
    for path in ("/health", "/healthz"):
        assert requests.get(server.url(path), timeout=5).json() == {"status": "ok"}
    for path in ("/ready", "/readyz"):
        response = requests.get(server.url(path), timeout=5)
        assert response.status_code == 200 and response.json()["status"] == "ready"
    doc = requests.get(server.url("/v1/model"), timeout=5).json()
    assert doc["status"] == "loaded"
    assert doc["type"] == "classification"
    assert doc["input_name"] == "X" and doc["input_type"] == "tensor(float)" and doc["input_shape"] == [None, 4]
    assert doc["outputs"] == [{"name": "label", "shape": [None], "type": "tensor(int64)"},
                              {"name": "probabilities", "shape": [None, 3], "type": "tensor(float)"}]
    assert doc["batch_size"] == 32 and doc["dynamic_batching"] is True
    assert doc["execution_provider"] == "CPUExecutionProvider"
    assert doc["id"] == doc["name"] == server.service.model.model_id
    # CUDA/DirectML are preferred by default and reported as skipped on this CPU-only build
    assert any(note.startswith("CUDAExecutionProvider") for note in doc["provider_fallback"])
    spec = requests.get(server.url("/openapi.json"), timeout=5).json()
    assert {"/health", "/ready", "/v1/model", "/v1/predict"} <= set(spec["paths"])
    page = requests.get(server.url("/docs"), timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "/v1/predict" in page.text and "http://" not in page.text and "https://" not in page.text
    good_request(server)
    metrics = requests.get(server.url("/metrics"), timeout=5).text
    for name in ("foundry_predict_requests_total", "foundry_predict_request_duration_seconds_bucket",
                 "foundry_predict_queue_depth", "foundry_predict_batch_size_bucket", "foundry_predict_rejected_total",
                 "foundry_model_load_seconds"):
        assert name in metrics
    missing = requests.get(server.url("/no/such/path"), timeout=5)
    assert missing.status_code == 404 and "detail" in missing.json()


BAD_INPUTS = [
    ("malformed JSON body", b"{not json", 400, "Malformed JSON"),
    ("body is an array", b"[1, 2]", 400, "JSON object"),
    ("no items", json.dumps({}).encode(), 400, "items"),
    ("zero items", json.dumps({"items": []}).encode(), 400, "exactly one item"),
    ("two items", json.dumps({"items": [item(b64("[1,2,3,4]"))["items"][0]] * 2}).encode(), 400, "exactly one item"),
    ("item not an object", json.dumps({"items": ["x"]}).encode(), 400, "items[0]"),
    ("wrong encoder", json.dumps(item("[1,2,3,4]", encoder="utf-8")).encode(), 400, "encoder"),
    ("bad base64", json.dumps(item("!!!not base64!!!")).encode(), 400, "base64"),
    ("text/plain", json.dumps(item(b64("hello"), "text/plain")).encode(), 400, "Unsupported content_type"),
    ("data not JSON", json.dumps(item(b64("hello"))).encode(), 400, "not valid JSON"),
    ("data is an object", json.dumps(item(b64('{"a": 1}'))).encode(), 400, "JSON array"),
    ("wrong width", json.dumps(item(b64("[[1,2,3]]"))).encode(), 400, "dimension 1 must be 4"),
    ("wrong rank", json.dumps(item(b64("[[[1,2,3,4]]]"))).encode(), 400, "dimensions"),
    ("ragged", json.dumps(item(b64("[[1,2,3,4],[1,2]]"))).encode(), 400, "ragged"),
    ("strings", json.dumps(item(b64('[["a","b","c","d"]]'))).encode(), 400, "numbers"),
    ("booleans", json.dumps(item(b64("[[true,false,true,false]]"))).encode(), 400, "booleans"),
    ("NaN", json.dumps(item(b64("[[NaN,1,2,3]]"))).encode(), 400, "NaN"),
    ("Infinity", json.dumps(item(b64("[[Infinity,1,2,3]]"))).encode(), 400, "NaN or Infinity"),
    ("empty", json.dumps(item(b64("[]"))).encode(), 400, "empty"),
    ("image that is not an image", json.dumps(item(b64("GIF89a garbage"), "image/gif")).encode(), 400, "image"),
    ("image for a tabular model", json.dumps(item(b64(b"\x89PNG\r\n"), "image/png")).encode(), 400,
     "not an image tensor"),
    ("empty body", b"", 400, "body is required"),
]


@pytest.mark.parametrize("name,body,status,needle", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(iris_server, name, body, status, needle):
    response = requests.post(iris_server.url("/v1/predict"), data=body, timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    doc = response.json()
    assert set(doc) == {"detail"}
    assert needle.lower() in doc["detail"].lower(), doc["detail"]
    good_request(iris_server)


def test_body_over_the_limit_is_413(iris_server):
    big = json.dumps(item(b64("[" + ",".join(["[1,2,3,4]"] * 5000) + "]"))).encode()
    assert len(big) > 65536
    response = requests.post(iris_server.url("/v1/predict"), data=big, timeout=10)
    assert response.status_code == 413
    assert "exceeds 65536 bytes" in response.json()["detail"]
    # chunked upload without a Content-Length: refused as it arrives
    chunks = (big[i:i + 8192] for i in range(0, len(big), 8192))
    response = requests.post(iris_server.url("/v1/predict"), data=chunks, timeout=10)
    assert response.status_code == 413
    good_request(iris_server)


def _png(width, height):
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@pytest.mark.parametrize("frontend", ["httptools", "tornado"])
def test_decompression_bomb_is_refused_before_decoding(frontend):
    built = models.channels_last_image(32)
    with PredictiveServer(built.path, frontend=frontend, env={"FOUNDRY_MAX_IMAGE_PIXELS": "1000000"}) as server:
        bomb = _png(4000, 4000)          # 16 Mpx, about 50 KB compressed
        assert len(bomb) < 200_000
        response = requests.post(server.url("/v1/predict"), json=body_for(bomb, "image/png"), timeout=10)
        assert response.status_code == 413
        assert "over the limit" in response.json()["detail"]
        ok = requests.post(server.url("/v1/predict"), json=body_for(_png(64, 64), "image/png"), timeout=10)
        assert ok.status_code == 200


def test_concurrent_requests_are_batched_and_never_mixed():
    built = models.digits_mlp()
    X = built.X[:256]
    expected_labels = built.estimator.predict(X)
    expected_proba = built.estimator.predict_proba(X)
    with PredictiveServer(built.path) as server:
        def one(i):
            rows = X[i:i + 1 + i % 3]          # 1 to 3 rows, overlapping windows: any mix-up shows
            with requests.Session() as session:
                response = session.post(server.url("/v1/predict"), json=body_for(rows), timeout=30)
            assert response.status_code == 200, response.text
            out = outputs_of(response.json())
            assert response.json()["metadata"]["batch_size"] == len(rows)
            np.testing.assert_array_equal(out["label_0"], expected_labels[i:i + len(rows)])
            np.testing.assert_allclose(out["probabilities_1"], expected_proba[i:i + len(rows)], atol=1e-4)
            return len(rows)
        # slow the model down a little so that requests pile up behind a running batch
        model = server.service.model
        real_run = model.run

        def slow_run(array):
            time.sleep(0.003)
            return real_run(array)
        model.run = slow_run
        server.service.batcher.inline = False
        with ThreadPoolExecutor(32) as pool:
            rows = list(pool.map(one, range(240)))
        batcher = server.service.batcher
        assert sum(rows) > batcher.batches * 1.5, "requests were not coalesced"
        hist = server.service.metrics.batch_size
        assert max(s.value for s in hist.collect()[0].samples if s.name.endswith("_sum")) == sum(rows)


def test_queue_full_answers_429_with_retry_after_and_payload():
    built = models.iris_logreg()
    with PredictiveServer(built.path, env={"FOUNDRY_QUEUE_DEPTH": "4", "FOUNDRY_MAX_BATCH_SIZE": "1"}) as server:
        release = threading.Event()
        model = server.service.model
        real_run = model.run

        def blocked_run(array):
            release.wait(20)
            return real_run(array)
        model.run = blocked_run
        server.service.batcher.inline = False
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(requests.post, server.url("/v1/predict"), json=body_for([[1, 2, 3, 4]]),
                                   timeout=30) for _ in range(12)]
            deadline = time.monotonic() + 10
            while sum(f.done() for f in futures) < 7 and time.monotonic() < deadline:
                time.sleep(0.02)
            release.set()
            answers = [f.result() for f in futures]
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) == 5          # one running + four queued
        assert statuses.count(429) == 7          # every request got exactly one answer
        rejected = next(a for a in answers if a.status_code == 429)
        doc = rejected.json()
        assert set(doc) == {"error", "queue_depth", "retry_after"}
        assert doc["error"].startswith("Queue full: ")
        assert doc["queue_depth"] == 4
        assert isinstance(doc["retry_after"], int) and doc["retry_after"] >= 1
        assert rejected.headers["Retry-After"] == str(doc["retry_after"])
        good_request(server)
        metrics = requests.get(server.url("/metrics"), timeout=5).text
        assert "foundry_predict_rejected_total 7.0" in metrics


@pytest.mark.parametrize("frontend", ["httptools", "tornado"])
def test_requests_of_disconnected_clients_are_dropped_before_running(frontend):
    built = models.iris_logreg()
    with PredictiveServer(built.path, frontend=frontend, env={"FOUNDRY_MAX_BATCH_SIZE": "1"}) as server:
        release = threading.Event()
        model = server.service.model
        real_run = model.run
        ran = []

        def blocked_run(array):
            release.wait(20)
            ran.append(array.shape[0])
            return real_run(array)
        model.run = blocked_run
        server.service.batcher.inline = False
        body = json.dumps(body_for([[1, 2, 3, 4]])).encode()
        request = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        # the first request occupies the model; three more queue behind it and then hang up
        first = ThreadPoolExecutor(1).submit(requests.post, server.url("/v1/predict"), data=body, timeout=30)
        time.sleep(0.3)
        socks = []
        for _ in range(3):
            s = socket.create_connection(server.address)
            s.sendall(request)
            socks.append(s)
        deadline = time.monotonic() + 5
        while len(server.service.batcher.queue) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(server.service.batcher.queue) == 3
        for s in socks:
            s.close()
        time.sleep(0.3)
        release.set()
        assert first.result().status_code == 200
        good_request(server)
        assert len(ran) == 2                      # the first request and the final one; the hung-up three never ran
        assert server.service.metrics.dropped._value.get() == 3
        assert server.service.inflight == 0       # the hung-up three are no longer counted in flight


def test_api_key_auth_protects_everything_but_the_probes(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "primary-key").write_text("fndry-pk-" + "a" * 40)
    (keys / "secondary-key").write_text("b" * 64)
    auth = AuthService.from_settings(AuthSettings(mode="api-key", api_keys_dir=str(keys)))
    built = models.iris_logreg()
    with PredictiveServer(built.path, auth=auth) as server:
        for path in ("/health", "/ready", "/healthz", "/readyz"):
            assert requests.get(server.url(path), timeout=5).status_code == 200
        for method, path in (("GET", "/v1/model"), ("POST", "/v1/predict"), ("GET", "/metrics"),
                             ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/elsewhere")):
            response = requests.request(method, server.url(path), timeout=5)
            assert response.status_code == 401, (method, path)
            assert response.json()["code"] == "missing_credentials"
            assert response.headers["WWW-Authenticate"] == "Bearer"
        body = body_for([[5.1, 3.5, 1.4, 0.2]])
        bad = requests.post(server.url("/v1/predict"), json=body, headers={"api-key": "nope"}, timeout=5)
        assert bad.status_code == 401 and bad.json()["code"] == "invalid_api_key" and "detail" in bad.json()
        both = requests.post(server.url("/v1/predict"), json=body, timeout=5,
                             headers={"api-key": "b" * 64, "Authorization": "Bearer " + "b" * 64})
        assert both.status_code == 400 and both.json()["code"] == "ambiguous_auth"
        for headers in ({"Authorization": "Bearer fndry-pk-" + "a" * 40}, {"api-key": "b" * 64},
                        {"X-API-Key": "b" * 64}):
            ok = requests.post(server.url("/v1/predict"), json=body, headers=headers, timeout=5)
            assert ok.status_code == 200, (headers, ok.text)


def test_every_route_requires_auth_unless_public(tmp_path):
    """Walk every route of the application: public ones answer without credentials, the others say 401."""
    from tornado.httpclient import HTTPClient

    from foundry_inference.apps.predictive.handlers import HealthHandler, ReadyHandler
    from tests.support.routes import iter_routes
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "primary-key").write_text("k" * 64)
    auth = AuthService.from_settings(AuthSettings(mode="api-key", api_keys_dir=str(keys)))
    built = models.iris_logreg()
    with PredictiveServer(built.path, auth=auth) as server:
        from foundry_inference.apps.predictive.server import make_app
        app = make_app(server.settings, auth=auth, service=server.service)
        routes = list(iter_routes(app))
        assert {r.path for r in routes} >= {"/health", "/ready", "/v1/model", "/v1/predict", "/metrics"}
        client = HTTPClient()
        try:
            for route in routes:
                assert route.uses_auth_mixin, route
                assert route.public == (route.handler in (HealthHandler, ReadyHandler)), route
                for method in route.methods:
                    response = client.fetch(server.url(route.path), method=method, raise_error=False,
                                            body=b"{}" if method in ("POST", "PUT", "PATCH") else None)
                    if route.public:
                        assert response.code == 200, (method, route.path)
                    else:
                        assert response.code == 401, (method, route.path)
                        if method != "HEAD":
                            assert json.loads(response.body)["code"] == "missing_credentials"
        finally:
            client.close()
