"""Scale to zero and back in embedded mode, with real parts: the operator and node agent (run_embedded) on the
embedded store, the real predictive server on the iris model fetched from a real registry, the real nginx sidecar,
the activator with the deployment's real API keys.

After scaleToZeroAfterSeconds without requests the model server stops (ScaledToZero, no process left but nginx); the
endpoint keeps answering through the activator: a bad key is refused there and starts nothing, a good one starts the
model and is answered; a model that cannot start answers held requests 503 with the cause."""
import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from foundry_inference.operator.main import run_embedded
from tests.e2e.quickstart_walkthrough import processes_under
from tests.support.embedded_env import loopback_embedded
from tests.support.require import require_module
from tests.unit.operator.factories import decoded, settings

from .test_operator_embedded import NS, Registry, byo, creds, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nginx")]
SCALING = {"minReplicas": 0, "maxReplicas": 1, "scaleToZeroAfterSeconds": 3}


def state(store, name="iris"):
    return (store.get("ModelDeployment", NS, name).get("status") or {}).get("state")


def model_servers(data):
    """PIDs of the deployments' model-server processes (not nginx, not a fetcher)."""
    out = []
    for pid in processes_under(data):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if "predictive-server" in cmd or "chat-server" in cmd:
            out.append(pid)
    return out


class Iris:
    def __init__(self, built):
        self.built = built
        row = [float(v) for v in built.X[0]]
        self.row = row
        self.body = {"items": [{"content_type": "application/json", "encoder": "base64",
                                "data": base64.b64encode(json.dumps([row]).encode()).decode()}]}

    def label(self, resp):
        return int(json.loads(base64.b64decode(resp.json()["items"][0]["data"]))["label_0"][0])


def _iris_setting(tmp_path, monkeypatch):
    """The iris model built, the fetcher allowed to use the loopback registry, an embedded store: (built, data,
    store)."""
    require_module("foundry_inference.apps.predictive.server")
    built = require_module("tests.support.models").iris_logreg()
    return (built, *loopback_embedded(tmp_path, monkeypatch))


@pytest.fixture
def iris_up(tmp_path, monkeypatch):
    """run_embedded with the iris model in a registry; yields (store, data, iris, registry)."""
    built, data, store = _iris_setting(tmp_path, monkeypatch)
    stop = threading.Event()
    conf = settings(NS, autoscaling={"periodSeconds": 0.5, "stableWindowSeconds": 4, "panicWindowSeconds": 1,
                                     "maxHeldRequests": 8, "holdTimeoutSeconds": 60})
    thread = threading.Thread(target=run_embedded, args=(store, data, stop, conf), daemon=True)
    with Registry(files={"iris.onnx": Path(built.path).read_bytes()}) as reg:
        thread.start()
        try:
            store.create(creds())
            yield store, data, Iris(built), reg
        finally:
            stop.set()
            thread.join(60)
            store.close()
    assert processes_under(data) == [], "processes outlived embedded mode"


def endpoint_of(store, data, name="iris"):
    st = store.get("ModelDeployment", NS, name)["status"]
    return st["internalEndpoint"], str(data / "tls" / "ca.crt")


def test_scale_to_zero_then_a_request_brings_it_back(iris_up):
    store, data, iris, reg = iris_up
    store.create(byo("iris", reg, autoscaling=SCALING))
    wait_for(lambda: state(store) == "Running", 90, "Running")
    url, ca = endpoint_of(store, data)
    key = decoded(store.get("Secret", NS, "iris-api-keys"), "primary-key")
    resp = requests.post(f"{url}/v1/predict", json=iris.body, verify=ca, timeout=30, headers={"api-key": key})
    assert resp.status_code == 200 and iris.label(resp) == int(iris.built.estimator.predict([iris.row])[0])

    wait_for(lambda: state(store) == "ScaledToZero", 60, "ScaledToZero")
    st = store.get("ModelDeployment", NS, "iris")["status"]
    assert st["desiredReplicas"] == 0 and st["lastScaling"]["replicas"] == 0
    assert "idle" in st["lastScaling"]["reason"]
    wait_for(lambda: model_servers(data) == [], 30, "the model server stopped")
    assert requests.get(f"{url}/health", verify=ca, timeout=10).status_code == 200   # a probe wakes nothing

    # bad credentials are refused by the activator, in the predictive envelope, and start nothing
    bad = requests.post(f"{url}/v1/predict", json=iris.body, verify=ca, timeout=30, headers={"api-key": "wrong"})
    assert bad.status_code == 401 and bad.json()["code"] == "invalid_api_key"
    none = requests.post(f"{url}/v1/predict", json=iris.body, verify=ca, timeout=30)
    assert none.status_code == 401
    time.sleep(1.5)
    assert model_servers(data) == [] and state(store) == "ScaledToZero"

    # the first request after scale to zero is held, starts the model, and is answered; so are those beside it
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _i: requests.post(f"{url}/v1/predict", json=iris.body, verify=ca, timeout=60,
                                                         headers={"api-key": key}), range(4)))
    cold = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert all(iris.label(a) == iris.label(resp) for a in answers)
    assert cold < 30
    st = store.get("ModelDeployment", NS, "iris")["status"]
    assert st["lastScaling"]["replicas"] == 1 and "scaled to zero" in st["lastScaling"]["reason"]
    assert len(model_servers(data)) == 1
    wait_for(lambda: state(store) == "Running", 30, "Running again")


def test_attack_a_model_that_cannot_start_answers_held_requests_503_with_the_cause(iris_up, monkeypatch):
    store, data, iris, reg = iris_up
    store.create(byo("iris", reg, autoscaling=SCALING))
    wait_for(lambda: state(store) == "Running", 90, "Running")
    wait_for(lambda: state(store) == "ScaledToZero", 60, "ScaledToZero")
    wait_for(lambda: model_servers(data) == [], 30, "the model server stopped")   # a draining one still answers
    url, ca = endpoint_of(store, data)
    key = decoded(store.get("Secret", NS, "iris-api-keys"), "primary-key")
    model = next((data / "workloads" / NS / "iris").rglob("iris.onnx"))
    model.write_bytes(b"not an onnx model")          # the next start fails to load it
    started = time.monotonic()
    resp = requests.post(f"{url}/v1/predict", json=iris.body, verify=ca, timeout=60, headers={"api-key": key})
    assert resp.status_code == 503, resp.text
    assert "could not start" in resp.json()["detail"] and time.monotonic() - started < 30


def scaled_to_zero(store, data, reg, name="iris", model=None):
    store.create(model or byo(name, reg, autoscaling=SCALING))
    wait_for(lambda: state(store, name) == "ScaledToZero", 120, "ScaledToZero")
    wait_for(lambda: model_servers(data) == [], 30, "the model server stopped")
    url, ca = endpoint_of(store, data, name)
    return url, ca, decoded(store.get("Secret", NS, f"{name}-api-keys"), "primary-key")


def test_attack_held_requests_beyond_the_bound_are_429_with_retry_after(iris_up):
    store, data, iris, reg = iris_up
    url, ca, key = scaled_to_zero(store, data, reg)
    with ThreadPoolExecutor(14) as pool:
        answers = list(pool.map(lambda _i: requests.post(f"{url}/v1/predict", json=iris.body, verify=ca, timeout=60,
                                                         headers={"api-key": key}), range(14)))
    codes = sorted(a.status_code for a in answers)
    assert set(codes) == {200, 429} and codes.count(200) >= 8, codes     # maxHeldRequests 8 in the fixture
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["Retry-After"] == "2"
    assert refused.json()["error"].startswith("Queue full") and refused.json()["retry_after"] == 2
    assert len(model_servers(data)) == 1


def test_attack_an_oversized_body_is_refused_before_anything_starts(iris_up):
    store, data, iris, reg = iris_up
    url, ca, key = scaled_to_zero(store, data, reg)
    resp = requests.post(f"{url}/v1/predict", data=b"0" * (51 << 20), verify=ca, timeout=60,
                         headers={"api-key": key, "Content-Type": "application/json"})
    assert resp.status_code == 413
    time.sleep(1.5)
    assert model_servers(data) == [] and state(store) == "ScaledToZero"


def test_streaming_chat_through_the_activator_with_the_openai_client(iris_up):
    import ssl

    import openai

    store, data, _iris, reg = iris_up
    url, ca, key = scaled_to_zero(store, data, reg, "tiny", model=tiny_chat(reg))
    http = openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca))
    bad = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0, http_client=http)
    with pytest.raises(openai.AuthenticationError) as refused:
        bad.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert refused.value.code == "invalid_api_key"
    assert model_servers(data) == []
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, http_client=http)
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=8, stream=True, extra_body={"min_tokens": 8})
    chunks = [c for c in stream]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 4
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason is not None or len(chunks) > 4
    assert len(model_servers(data)) == 1


def test_restart_during_a_scale_up_leaves_one_replica_and_answers_or_refuses_held_requests(tmp_path, monkeypatch):
    built, data, store = _iris_setting(tmp_path, monkeypatch)
    conf = settings(NS, autoscaling={"periodSeconds": 0.5, "stableWindowSeconds": 4, "panicWindowSeconds": 1})
    iris = Iris(built)

    def start():
        stop = threading.Event()
        thread = threading.Thread(target=run_embedded, args=(store, data, stop, conf), daemon=True)
        thread.start()
        return stop, thread

    with Registry(files={"iris.onnx": Path(built.path).read_bytes()}) as reg:
        stop, thread = start()
        try:
            store.create(creds())
            url, ca, key = scaled_to_zero(store, data, reg)
            with ThreadPoolExecutor(2) as pool:
                held = pool.submit(requests.post, f"{url}/v1/predict", json=iris.body, verify=ca, timeout=60,
                                   headers={"api-key": key})
                wait_for(lambda: store.get("Deployment", NS, "iris")["spec"]["replicas"] == 1, 10, "the wake-up")
                stop.set()                                   # `up` stops in the middle of the scale-up
                thread.join(60)
                answer = held.result()
            assert answer.status_code in (200, 503), answer.text
            if answer.status_code == 503:
                assert "stopping" in answer.json()["detail"]
            assert processes_under(data) == []
            stop, thread = start()                           # the next life: the decision (1 replica) stands
            wait_for(lambda: state(store) == "Running", 90, "Running after the restart")
            assert len(model_servers(data)) == 1
            url, ca = endpoint_of(store, data)
            resp = requests.post(f"{url}/v1/predict", json=iris.body, verify=ca, timeout=30, headers={"api-key": key})
            assert resp.status_code == 200
        finally:
            stop.set()
            thread.join(60)
            store.close()
    assert processes_under(data) == []


def tiny_chat(reg, name="tiny", **scaling):
    from tests.support.chat_models import require, tiny_chat_model
    reg.server.push_folder(require(tiny_chat_model), "models/tiny")
    chat = byo(name, reg, autoscaling=scaling or SCALING)
    chat["spec"].update(workloadType="generative", port=5000)
    chat["spec"]["model"]["custom"]["repository"] = "models/tiny"
    return chat


def test_load_adds_replicas_behind_the_sidecar_and_they_go_when_it_ends(iris_up):
    """More model-server processes while streams pile up (the chat server's running + waiting gauges), every one
    answered (new replicas join nginx only once ready), back to the minimum after the load."""
    store, data, _iris, reg = iris_up
    store.create(tiny_chat(reg, minReplicas=1, maxReplicas=3, targetConcurrency=1, scaleDownDelaySeconds=2))
    wait_for(lambda: state(store, "tiny") == "Running", 120, "Running")
    url, ca = endpoint_of(store, data, "tiny")
    key = decoded(store.get("Secret", NS, "tiny-api-keys"), "primary-key")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, "min_tokens": 64}
    deadline = time.monotonic() + 12
    codes, peak = [], [1]

    def user(_i):
        with requests.Session() as http:
            # as the official openai client does: a connection error before any answer is retried (each scale step
            # reloads nginx, and an old worker closes its idle keep-alive connections: a request sent on one at that
            # instant meets a closed connection, docs/autoscaling.md); an error after the request was read is not
            retry = Retry(total=2, connect=2, other=2, read=0, status=0, allowed_methods=None, raise_on_status=False)
            http.mount("https://", HTTPAdapter(max_retries=retry))
            while time.monotonic() < deadline:
                codes.append(http.post(f"{url}/v1/chat/completions", json=body, verify=ca, timeout=60,
                                       headers={"api-key": key}).status_code)
                peak.append(len(model_servers(data)))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(user, range(6)))
    assert codes and set(codes) == {200}, sorted(set(codes))
    st = store.get("ModelDeployment", NS, "tiny")["status"]
    assert max(peak) >= 2, "no replica was added under load"
    assert st["lastScaling"]["replicas"] >= 2 or st["desiredReplicas"] >= 2
    wait_for(lambda: store.get("ModelDeployment", NS, "tiny")["status"]["desiredReplicas"] == 1, 60,
             "back to minReplicas after the load")
    wait_for(lambda: len(model_servers(data)) == 1, 30, "the extra processes stopped")
