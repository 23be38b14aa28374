"""A real Prometheus (Debian's `prometheus`) scrapes a running platform in embedded mode: the real predictive server
(iris) and the real chat server (the tiny test model, brought as a custom artifact), started by the node agent from
the Deployments the operator wrote, serve their metrics on the keyless ports that status.metricsEndpoint names;
Prometheus scrapes them with no credentials at all and answers queries for KServe's, vLLM's and our series through
its HTTP API, while the API endpoints still refuse a request without a key."""
import base64
import json
import ssl
import subprocess
import threading
from pathlib import Path

import openai
import pytest
import requests

from foundry_inference.operator.main import run_embedded
from tests.e2e.quickstart_walkthrough import processes_under
from tests.integration.test_operator_embedded import NS, Registry, byo, creds, state, wait_for
from tests.support import models
from tests.support.chat_models import require, tiny_chat_model
from tests.support.embedded_env import loopback_embedded
from tests.support.procs import free_port
from tests.support.require import require_tool
from tests.unit.operator.factories import decoded, settings

pytestmark = pytest.mark.integration


def query(base, promql):
    r = requests.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def test_prometheus_scrapes_the_keyless_metrics_port_of_an_embedded_deployment(tmp_path, monkeypatch):
    prometheus = require_tool("prometheus", "apt-get install prometheus")
    require_tool("nginx", "apt-get install nginx-light")
    built = models.iris_logreg()
    tiny = Path(require(tiny_chat_model))
    data, store = loopback_embedded(tmp_path, monkeypatch)
    stop = threading.Event()
    thread = threading.Thread(target=run_embedded, args=(store, data, stop, settings(NS)), daemon=True)
    prom = None
    with Registry(files={"iris.onnx": Path(built.path).read_bytes()}) as reg:
        reg.server.push_folder(tiny, "models/tiny")
        thread.start()
        try:
            store.create(creds())
            store.create(byo("iris", reg))
            chat = byo("tiny", reg)
            chat["spec"].update(workloadType="generative", port=5000)
            chat["spec"]["model"]["custom"]["repository"] = "models/tiny"
            store.create(chat)
            st, chat_st = (wait_for(lambda n=name: (store.get("ModelDeployment", NS, n)["status"]
                                                    if state(store, n) == "Running" and
                                                    store.get("ModelDeployment", NS, n)["status"].get("metricsEndpoint")
                                                    else None), 120, f"{name} Running with a metricsEndpoint")
                           for name in ("iris", "tiny"))
            endpoint, metrics_url = st["internalEndpoint"], st["metricsEndpoint"]
            assert metrics_url.startswith("http://127.0.0.1:") and metrics_url.endswith("/metrics")
            ca = str(data / "tls" / "ca.crt")
            key = decoded(store.get("Secret", NS, "iris-api-keys"), "primary-key")
            row = [float(v) for v in built.X[0]]
            body = {"items": [{"content_type": "application/json", "encoder": "base64",
                               "data": base64.b64encode(json.dumps([row]).encode()).decode()}]}
            assert requests.get(f"{endpoint}/metrics", verify=ca, timeout=10).status_code == 401
            for _ in range(3):
                r = requests.post(f"{endpoint}/v1/predict", json=body, verify=ca, timeout=10, headers={"api-key": key})
                assert r.status_code == 200, r.text
            chat_key = decoded(store.get("Secret", NS, "tiny-api-keys"), "primary-key")
            client = openai.OpenAI(base_url=f"{chat_st['internalEndpoint']}/v1", api_key=chat_key, max_retries=0,
                                   http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca)))
            answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                    max_tokens=5, extra_body={"min_tokens": 5})
            assert answer.usage.completion_tokens == 5

            targets = [u[len("http://"):-len("/metrics")] for u in (metrics_url, chat_st["metricsEndpoint"])]
            config = tmp_path / "prometheus.yml"
            config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: foundry-models\n"
                              f"  metrics_path: /metrics\n  static_configs:\n  - targets: {targets}\n")
            port = free_port()
            prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                                    stderr=open(tmp_path / "prometheus.log", "w"))
            base = f"http://127.0.0.1:{port}"
            model = f"{reg.address}/{reg.repository}:{reg.tag}"
            found = wait_for(lambda: query(base, f'request_predict_seconds_count{{model_name="{model}"}}'), 60,
                             "Prometheus to answer for request_predict_seconds_count")
            assert float(found[0]["value"][1]) == 3
            # both targets scraped (each has its own first scrape, up to one interval apart)
            wait_for(lambda: [r["value"][1] for r in query(base, 'up{job="foundry-models"}')] == ["1", "1"], 30,
                     "Prometheus to have scraped both targets")
            chat_model = f"{reg.address}/models/tiny:v1"
            generated = wait_for(lambda: query(base, f'vllm:generation_tokens_total{{model_name="{chat_model}"}}'),
                                 30, "Prometheus to answer for vllm:generation_tokens_total")
            assert float(generated[0]["value"][1]) == 5
            prompt = query(base, f'vllm:prompt_tokens_total{{model_name="{chat_model}"}}')
            assert float(prompt[0]["value"][1]) == answer.usage.prompt_tokens
            for series in ("vllm:time_to_first_token_seconds_count", "vllm:e2e_request_latency_seconds_count",
                           "vllm:request_queue_time_seconds_count", "vllm:time_per_output_token_seconds_count"):
                assert float(query(base, f'{series}{{model_name="{chat_model}"}}')[0]["value"][1]) == 1, series
            assert float(query(base, f'vllm:request_success_total{{model_name="{chat_model}",'
                                     f'finished_reason="length"}}')[0]["value"][1]) == 1
            for series in ("request_preprocess_seconds_count", "request_postprocess_seconds_count"):
                assert float(query(base, f'{series}{{model_name="{model}"}}')[0]["value"][1]) == 3
            assert float(query(base, 'foundry_predict_requests_total{status="200"}')[0]["value"][1]) == 3
        finally:
            if prom is not None:
                prom.terminate()
                try:
                    prom.wait(20)
                except subprocess.TimeoutExpired:
                    prom.kill()
            stop.set()
            thread.join(60)
            store.close()
    assert processes_under(data) == []
    assert not thread.is_alive()
