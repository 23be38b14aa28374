"""Metrics under the names users' dashboards read (vLLM's on the chat server, KServe's on the predictive server),
served on a separate port without any key while the API port demands one."""
import openai
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import models
from tests.support.procs import free_port
from tests.unit.chat.harness import ChatServer, key_auth
from tests.unit.predictive.harness import PredictiveServer, body_for

pytestmark = pytest.mark.unit

ASK = [{"role": "user", "content": "hello"}]
KEY = "fndry-pk-" + "m" * 40


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found, name, **labels):
    return found[(name, frozenset(labels.items()))]


@pytest.fixture
def keyed_chat(tiny_model, tmp_path):
    (tmp_path / "primary-key").write_text(KEY)
    port = free_port()
    with ChatServer(tiny_model, auth=key_auth(tmp_path),
                    env={"FOUNDRY_MODEL_ID": "tiny-chat", "FOUNDRY_METRICS_PORT": str(port),
                         "FOUNDRY_METRICS_HOST": "127.0.0.1"}) as server:
        server.metrics_url = f"http://127.0.0.1:{port}/metrics"
        yield server


def test_chat_metrics_port_needs_no_key_and_serves_only_metrics(keyed_chat):
    assert requests.get(keyed_chat.url("/metrics"), timeout=5).status_code == 401      # the API port wants a key
    r = requests.get(keyed_chat.metrics_url, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    base = keyed_chat.metrics_url[:-len("/metrics")]
    for path in ("/v1/models", "/v1/chat/completions", "/health", "/"):
        assert requests.get(base + path, timeout=5).status_code == 404
    assert requests.post(keyed_chat.metrics_url, data=b"x", timeout=5).status_code == 405


def test_chat_exports_vllm_names(keyed_chat):
    client = openai.OpenAI(base_url=keyed_chat.url("/v1"), api_key=KEY)
    eos = {str(t): -100 for t in keyed_chat.service.engine.eos_ids}
    answer = client.chat.completions.create(model="tiny-chat", messages=ASK, max_tokens=5, logit_bias=eos)
    streamed = list(client.completions.create(model="tiny-chat", prompt="hi there", max_tokens=3, stream=True,
                                              logit_bias=eos))
    assert streamed
    found = samples(requests.get(keyed_chat.metrics_url, timeout=5).text)
    model = {"model_name": "tiny-chat", "engine": "0"}
    engine = keyed_chat.service.engine
    prompt = len(engine.encode(engine.render_prompt(ASK))) + len(engine.encode("hi there"))
    assert value(found, "vllm:prompt_tokens_total", **model) == prompt == answer.usage.prompt_tokens + \
        len(engine.encode("hi there"))
    assert value(found, "vllm:generation_tokens_total", **model) == 5 + 3
    assert value(found, "vllm:request_success_total", finished_reason="length", **model) == 2
    assert value(found, "vllm:request_success_total", finished_reason="stop", **model) == 0
    for histogram in ("vllm:time_to_first_token_seconds", "vllm:time_per_output_token_seconds",
                      "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds"):
        assert value(found, histogram + "_count", **model) == 2, histogram
    assert value(found, "vllm:num_requests_running", **model) == 0
    assert value(found, "vllm:num_requests_waiting", **model) == 0
    # ours are still there
    assert value(found, "foundry_chat_requests_total", endpoint="chat", status="200") == 1
    assert value(found, "foundry_chat_requests_total", endpoint="completions", status="200") == 1


@pytest.mark.parametrize("frontend", ["httptools", "tornado"])
def test_predictive_exports_kserve_names_on_the_metrics_port(frontend, tmp_path):
    built = models.iris_logreg()
    (tmp_path / "primary-key").write_text(KEY)
    port = free_port()
    with PredictiveServer(built.path, frontend=frontend, auth=key_auth(tmp_path),
                          env={"FOUNDRY_METRICS_PORT": str(port), "FOUNDRY_METRICS_HOST": "127.0.0.1",
                               "FOUNDRY_MODEL_ID": "iris"}) as server:
        headers = {"Authorization": f"Bearer {KEY}"}
        for _ in range(3):
            r = requests.post(server.url("/v1/predict"), json=body_for([[5.1, 3.5, 1.4, 0.2]]), headers=headers,
                              timeout=10)
            assert r.status_code == 200, r.text
        assert requests.get(server.url("/metrics"), timeout=5).status_code == 401
        found = samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    for stage in ("preprocess", "predict", "postprocess"):
        assert value(found, f"request_{stage}_seconds_count", model_name="iris") == 3
        assert value(found, f"request_{stage}_seconds_sum", model_name="iris") > 0
    assert value(found, "foundry_predict_requests_total", status="200") == 3
