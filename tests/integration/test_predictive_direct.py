"""`POST /v1/predict` on the httptools front end's direct route (apps/predictive/direct.py) answers exactly what the
Tornado handler answers: the same status, body and headers for successes and for every error, authentication on every
request, the request counted in the metrics, a failed model run as a 500 in the envelope, keep-alive rules."""
import gc
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from tests.support import models
from tests.unit.predictive.harness import PredictiveServer, body_for

pytestmark = pytest.mark.integration

KEY = "fndry-pk-" + "7" * 40
HEADERS = ("Content-Type", "X-Content-Type-Options", "Retry-After", "WWW-Authenticate")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The same model behind both front ends, with API-key auth on."""
    keys = tmp_path_factory.mktemp("keys")
    (keys / "primary-key").write_text(KEY)
    built = models.iris_logreg()
    auth = AuthService.from_settings(AuthSettings(mode="api-key", api_keys_dir=str(keys)))
    with PredictiveServer(built.path, frontend="httptools", auth=auth) as fast, \
            PredictiveServer(built.path, frontend="tornado", auth=auth) as slow:
        yield fast, slow


def _answer(server, body, headers):
    response = requests.post(server.url("/v1/predict"), data=body, headers=headers, timeout=10)
    doc = response.json()
    if response.status_code == 200:
        doc["metadata"].pop("inference_time_ms")
    return response.status_code, doc, {name: response.headers.get(name) for name in HEADERS}


GOOD = json.dumps(body_for([[5.1, 3.5, 1.4, 0.2]]))


@pytest.mark.parametrize("body, headers", [
    (GOOD, {"Authorization": f"Bearer {KEY}"}),
    (GOOD, {"api-key": KEY}),
    (json.dumps(body_for([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])), {"api-key": KEY}),
    (GOOD, {}),                                                    # no credential: 401
    (GOOD, {"api-key": "wrong"}),                                  # bad key: 401
    (GOOD, {"api-key": KEY, "Authorization": f"Bearer {KEY}"}),    # ambiguous: 401
    ("{not json", {"api-key": KEY}),                               # 400
    (json.dumps(body_for([[1, 2, 3]])), {"api-key": KEY}),         # wrong shape: 400
    (json.dumps(body_for([[float("nan"), 1, 2, 3]])), {"api-key": KEY}),
    ("", {"api-key": KEY}),
])
def test_direct_route_answers_what_the_tornado_handler_answers(servers, body, headers):
    fast, slow = servers
    assert _answer(fast, body, headers) == _answer(slow, body, headers)


def test_every_direct_answer_is_authenticated_and_counted(servers):
    fast, _ = servers
    before = fast.service.metrics.requests.labels("200")._value.get()
    with requests.Session() as session:    # one kept-alive connection: auth is per request, not per connection
        assert session.post(fast.url("/v1/predict"), data=GOOD, headers={"api-key": KEY}).status_code == 200
        assert session.post(fast.url("/v1/predict"), data=GOOD).status_code == 401
        assert session.post(fast.url("/v1/predict"), data=GOOD, headers={"api-key": KEY}).status_code == 200
    assert fast.service.metrics.requests.labels("200")._value.get() == before + 2
    assert fast.service.inflight == 0


def test_a_failed_model_run_is_a_500_in_the_envelope_and_the_server_goes_on(servers):
    fast, _ = servers
    model = fast.service.model
    real_run = model.run

    def broken(array):
        raise RuntimeError("onnxruntime exploded")
    model.run = broken
    try:
        response = requests.post(fast.url("/v1/predict"), data=GOOD, headers={"api-key": KEY}, timeout=10)
    finally:
        model.run = real_run
    assert response.status_code == 500
    assert response.json() == {"detail": "Inference failed: onnxruntime exploded"}
    assert response.headers["Content-Type"] == "application/json"
    assert "Traceback" not in response.text
    assert requests.post(fast.url("/v1/predict"), data=GOOD, headers={"api-key": KEY}, timeout=10).status_code == 200
    assert fast.service.inflight == 0


def _raw(server, request):
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def test_direct_route_keep_alive_rules(servers):
    fast, _ = servers
    body = GOOD.encode()
    head = b"Host: x\r\napi-key: %s\r\nContent-Length: %d\r\n" % (KEY.encode(), len(body))
    # HTTP/1.1 pipelined, the second asks to close: two answers in order, then the server closes
    answer = _raw(fast, b"POST /v1/predict HTTP/1.1\r\n" + head + b"\r\n" + body
                  + b"POST /v1/predict HTTP/1.1\r\n" + head + b"Connection: close\r\n\r\n" + body)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert answer.count(b"Connection: close\r\n") == 1
    # HTTP/1.0 without keep-alive: answered, then closed
    answer = _raw(fast, b"POST /v1/predict HTTP/1.0\r\n" + head + b"\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in answer
    # HTTP/1.0 asking for keep-alive is told so
    with socket.create_connection(fast.address, timeout=10) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.0\r\n" + head + b"Connection: keep-alive\r\n\r\n" + body)
        first = sock.recv(65536)
    assert b"Connection: keep-alive\r\n" in first and b"200 OK" in first


@pytest.mark.parametrize("host, status", [
    (None, 400), (b"a b", 400), (b"a,b", 400),             # Tornado refuses these: so does the direct route
    (b"a%41!$'", 200), (b"[::1]:8000", 200), (b"", 200),   # valid, if odd: served (odd ones by the application)
])
def test_attack_direct_route_refuses_the_host_headers_tornado_refuses(servers, host, status):
    fast, _ = servers
    body = GOOD.encode()
    head = b"api-key: %s\r\nContent-Length: %d\r\nConnection: close\r\n" % (KEY.encode(), len(body))
    if host is not None:
        head += b"Host: %s\r\n" % host
    answer = _raw(fast, b"POST /v1/predict HTTP/1.1\r\n" + head + b"\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    if status == 400:
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"].startswith("Malformed HTTP request: ")
    assert fast.service.inflight == 0


def test_a_direct_answer_leaves_no_reference_cycle(servers):
    # every object of a request must be freed when it is answered: a cycle per request (an exchange holding a close
    # callback bound to what holds the exchange) left the garbage collector a third of the server's CPU
    fast, _ = servers
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        def post(_):
            return requests.post(fast.url("/v1/predict"), data=GOOD, headers={"api-key": KEY}, timeout=10).status_code
        with ThreadPoolExecutor(8) as pool:      # concurrent: requests wait in the batcher's queue
            assert set(pool.map(post, range(64))) == {200}
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage if type(o).__name__ in ("_Exchange", "_Reply", "_Request")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []
    assert fast.service.inflight == 0
