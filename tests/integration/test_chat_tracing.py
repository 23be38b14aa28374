"""Opt-in tracing end to end: the official `openai` client sends a W3C traceparent through the real nginx TLS sidecar
(the operator's own configuration) to the chat server on the tiny model, which exports OTLP/HTTP spans to a loopback
receiver that decodes them: the server span continues the client's trace, carries gen_ai.* attributes, and has
queue / prefill / decode children. Off (the default), nothing is exported."""
import datetime
import os
import secrets
import ssl
import subprocess
import time

import openai
import pytest
import requests

from foundry_inference.operator.builders import nginx, tls
from tests.support.chat_models import require, tiny_chat_model
from tests.support.otlp import OtlpReceiver
from tests.support.procs import free_port
from tests.support.require import require_tool
from tests.unit.chat.harness import ChatServer

pytestmark = pytest.mark.integration
ASK = [{"role": "user", "content": "what is the capital of france?"}]


def start_nginx(tmp_path, app_port):
    binary = require_tool("nginx", "apt-get install nginx-light")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert, ca_key = tls.generate_ca(now)
    cert, key = tls.issue(ca_cert, ca_key, tls.service_dns_names("chat", "ns"), now)
    (tmp_path / "ca.crt").write_bytes(ca_cert)
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    port = free_port()
    params = nginx.NginxParams(listen=f"127.0.0.1:{port}", app_ports=(app_port,), cert_path=str(tmp_path / "tls.crt"),
                               key_path=str(tmp_path / "tls.key"), temp_dir=str(tmp_path),
                               pid_path=str(tmp_path / "nginx.pid"))
    (tmp_path / "nginx.conf").write_text(nginx.render(params))
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    proc = subprocess.Popen([binary, "-e", "stderr", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path),
                             "-g", directives], stderr=open(tmp_path / "nginx.log", "w"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            requests.get(f"https://127.0.0.1:{port}/health", verify=str(tmp_path / "ca.crt"), timeout=1)
            return proc, port
        except requests.RequestException:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError((tmp_path / "nginx.log").read_text())


@pytest.fixture(scope="module")
def tiny():
    return require(tiny_chat_model)


def test_spans_continue_the_clients_trace_through_nginx(tiny, tmp_path, monkeypatch):
    require_tool("nginx", "apt-get install nginx-light")
    with OtlpReceiver() as otlp:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        with ChatServer(tiny, env={"FOUNDRY_MODEL_ID": "tiny-chat", "FOUNDRY_TRACING": "on"}) as server:
            proxy, port = start_nginx(tmp_path, server.address[1])
            try:
                trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
                client = openai.OpenAI(base_url=f"https://127.0.0.1:{port}/v1", api_key="unused",
                                       http_client=openai.DefaultHttpxClient(
                                           verify=ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))),
                                       default_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
                answer = client.chat.completions.create(model="tiny-chat", messages=ASK, max_tokens=6)
                streamed = list(client.completions.create(model="tiny-chat", prompt="hello", max_tokens=3,
                                                          stream=True))
                assert streamed
                spans = otlp.wait_for(lambda s: sum(x["kind"] == 2 for x in s) >= 2)
            finally:
                proxy.terminate()
                proxy.wait(10)
    servers = [s for s in spans if s["kind"] == 2]                     # SPAN_KIND_SERVER
    chat = next(s for s in servers if s["name"] == "chat tiny-chat")
    assert chat["trace_id"] == trace_id and chat["parent_span_id"] == parent_id
    attrs = chat["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "tiny-chat"
    assert attrs["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert attrs["gen_ai.response.finish_reasons"] == [answer.choices[0].finish_reason]
    assert 0 < attrs["gen_ai.server.time_to_first_token"] < (chat["end"] - chat["start"]) / 1e9
    assert chat["resource"]["service.name"] == "foundry-chat-server"
    children = {s["name"]: s for s in spans if s["parent_span_id"] == chat["span_id"]}
    assert set(children) == {"queue", "prefill", "decode"}
    assert all(chat["start"] <= c["start"] <= c["end"] <= chat["end"] for c in children.values())
    assert children["queue"]["end"] <= children["prefill"]["start"] + 1 and \
        children["prefill"]["end"] <= children["decode"]["start"] + 1
    legacy = next(s for s in servers if s["name"] == "text_completion tiny-chat")
    assert legacy["trace_id"] == trace_id and legacy["attributes"]["gen_ai.usage.output_tokens"] == 3


def test_tracing_is_off_by_default(tiny, monkeypatch):
    with OtlpReceiver() as otlp:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp.endpoint)
        with ChatServer(tiny, env={"FOUNDRY_MODEL_ID": "tiny-chat"}) as server:
            assert not server.service.tracing.enabled
            client = openai.OpenAI(base_url=server.url("/v1"), api_key="unused")
            client.chat.completions.create(model="tiny-chat", messages=ASK, max_tokens=3,
                                           extra_headers={"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"})
            time.sleep(0.5)
        assert otlp.spans == []
