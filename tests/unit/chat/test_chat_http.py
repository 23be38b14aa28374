"""The chat server over real HTTP on the tiny model: OpenAI shapes, SSE streaming, the official `openai` client,
errors in the OpenAI envelope, 429 + Retry-After, client disconnects, concurrent streams, auth and route coverage."""
import json
import socket
import threading
import time

import pytest
import requests

from tests.support.require import require_module
from tests.unit.chat.harness import ChatServer, key_auth

pytestmark = pytest.mark.unit

ASK = [{"role": "user", "content": "what is the capital of france?"}]


def chat(server, timeout=30, **body):
    body.setdefault("model", "tiny-chat")
    body.setdefault("messages", ASK)
    return requests.post(server.url("/v1/chat/completions"), json=body, timeout=timeout,
                         stream=bool(body.get("stream")))


def sse_events(response):
    """The `data:` payloads of a server-sent event stream, [DONE] included as the string."""
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
        else:
            assert line == "", f"unexpected SSE line {line!r}"
    return events


def slow_down(server, seconds_per_step):
    """Make every decode step take at least `seconds_per_step` (so requests overlap on the tiny model)."""
    engine = server.service.engine
    original = engine._decode_step

    def slow():
        time.sleep(seconds_per_step)
        original()
    engine._decode_step = slow
    return lambda: setattr(engine, "_decode_step", original)


def test_completion_shape_and_exact_usage(tiny_server):
    r = chat(tiny_server, max_tokens=9)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "tiny-chat" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("length", "stop")
    engine = tiny_server.service.engine
    prompt = engine.encode(engine.render_prompt(ASK))
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(prompt)
    assert usage["completion_tokens"] == (9 if choice["finish_reason"] == "length" else usage["completion_tokens"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_stream_is_openai_sse_ending_with_done(tiny_server):
    plain = chat(tiny_server, max_tokens=12).json()
    r = chat(tiny_server, max_tokens=12, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["X-Accel-Buffering"] == "no"
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [f["choices"][0]["finish_reason"] for f in finals] == [plain["choices"][0]["finish_reason"]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 3, \
        "streamed token by token"


def test_openai_client_unchanged_streaming_included(tiny_server):
    openai = require_module("openai")
    client = openai.OpenAI(base_url=tiny_server.url("/v1"), api_key="unused", max_retries=0)
    done = client.chat.completions.create(model="tiny-chat", messages=ASK, max_tokens=10, seed=1)
    assert done.choices[0].message.role == "assistant" and done.usage.completion_tokens >= 1
    stream = client.chat.completions.create(model="tiny-chat", messages=ASK, max_tokens=10, seed=1, stream=True,
                                            stream_options={"include_usage": True})
    parts, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(parts) == done.choices[0].message.content
    assert usage.completion_tokens == done.usage.completion_tokens
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-chat"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-chat", messages=ASK, n=99)
    assert info.value.body["param"] == "n"


def test_openai_client_forced_tool_call_streams_tool_call_deltas(tiny_server):
    openai = require_module("openai")
    client = openai.OpenAI(base_url=tiny_server.url("/v1"), api_key="unused", max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["unit"],
        "additionalProperties": False}}}]
    out = client.chat.completions.create(model="tiny-chat", messages=ASK, tools=tools, tool_choice="required",
                                         max_tokens=60)
    (call,) = out.choices[0].message.tool_calls
    assert out.choices[0].finish_reason == "tool_calls" and out.choices[0].message.content is None
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments)["unit"] in ("celsius", "fahrenheit")
    stream = client.chat.completions.create(model="tiny-chat", messages=ASK, tools=tools, max_tokens=60,
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                            stream=True)
    deltas, finish = [], None
    for chunk in stream:
        deltas += chunk.choices[0].delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas))["unit"] in ("celsius", "fahrenheit")


def test_json_schema_response_format(tiny_server):
    schema = {"type": "object", "properties": {"answer": {"enum": ["paris", "rome"]}}, "required": ["answer"],
              "additionalProperties": False}
    r = chat(tiny_server, max_tokens=40, response_format={"type": "json_schema",
                                                           "json_schema": {"name": "a", "schema": schema}})
    assert r.status_code == 200
    assert json.loads(r.json()["choices"][0]["message"]["content"])["answer"] in ("paris", "rome")


def test_stop_seed_and_n_over_http(tiny_server):
    full = chat(tiny_server, max_tokens=30).json()["choices"][0]["message"]["content"]
    stop = full[10:13]
    cut = chat(tiny_server, max_tokens=30, stop=[stop]).json()["choices"][0]
    assert cut["message"]["content"] == full[:full.index(stop)] and cut["finish_reason"] == "stop"
    a = chat(tiny_server, max_tokens=20, temperature=1.2, seed=7, n=2).json()
    b = chat(tiny_server, max_tokens=20, temperature=1.2, random_seed=7, n=2).json()
    assert [c["message"]["content"] for c in a["choices"]] == [c["message"]["content"] for c in b["choices"]]
    assert [c["index"] for c in a["choices"]] == [0, 1]


def test_errors_use_the_openai_envelope(tiny_server):
    r = requests.post(tiny_server.url("/v1/chat/completions"), data="{not json", timeout=10)
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "code", "param"}
    long_prompt = [{"role": "user", "content": "red blue green " * 200}]
    r = chat(tiny_server, messages=long_prompt)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded" and r.json()["error"]["param"] == "messages"
    r = chat(tiny_server, top_logprobs=2)
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"
    r = requests.get(tiny_server.url("/v1/nope"), timeout=10)
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"
    r = requests.get(tiny_server.url("/v1/chat/completions"), timeout=10)
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    r = requests.post(tiny_server.url("/v1/audio/transcriptions"), files={"file": ("a.wav", b"RIFF")}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_supported"


def test_max_tokens_is_clamped_to_the_context(tiny_server):
    engine = tiny_server.service.engine
    no_eos = {str(t): -100 for t in engine.eos_ids}
    body = chat(tiny_server, max_tokens=100_000, logit_bias=no_eos).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == engine.context_length


def test_health_ready_models_metrics(tiny_server):
    assert requests.get(tiny_server.url("/health"), timeout=5).json() == {"status": "ok"}
    assert requests.get(tiny_server.url("/healthz"), timeout=5).status_code == 200
    assert requests.head(tiny_server.url("/ready"), timeout=5).status_code == 200
    assert requests.get(tiny_server.url("/ready"), timeout=5).json() == {"status": "ready", "model": "tiny-chat"}
    assert requests.get(tiny_server.url("/readyz"), timeout=5).status_code == 200
    models = requests.get(tiny_server.url("/v1/models"), timeout=5).json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny-chat"
    chat(tiny_server, max_tokens=3)
    metrics = requests.get(tiny_server.url("/metrics"), timeout=5).text
    assert 'foundry_chat_requests_total{endpoint="chat",status="200"}' in metrics
    assert "foundry_chat_completion_tokens_total" in metrics and "foundry_chat_time_to_first_token" in metrics


@pytest.fixture
def slow_server(tiny_model):
    with ChatServer(tiny_model, env={"FOUNDRY_MODEL_ID": "tiny-chat", "FOUNDRY_CHAT_MAX_BATCH": "2",
                                     "FOUNDRY_CHAT_QUEUE_DEPTH": "1"}) as server:
        restore = slow_down(server, 0.02)
        yield server
        restore()


def test_full_queue_answers_429_with_retry_after(slow_server):
    no_eos = {str(t): -100 for t in slow_server.service.engine.eos_ids}
    streams = [chat(slow_server, max_tokens=200, stream=True, timeout=60, logit_bias=no_eos)
               for _ in range(3)]                                   # 2 running, 1 queued
    try:
        r = chat(slow_server, max_tokens=5)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and r.json()["error"]["type"] == "rate_limit_error"
    finally:
        for s in streams:
            s.close()
    deadline = time.monotonic() + 10
    while slow_server.service.engine._inflight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert chat(slow_server, max_tokens=3).status_code == 200


def test_client_disconnect_cancels_generation(slow_server):
    engine = slow_server.service.engine
    sock = socket.create_connection(slow_server.address)
    body = json.dumps({"model": "m", "messages": ASK, "max_tokens": 10_000, "stream": True,
                       "logit_bias": {str(t): -100 for t in engine.eos_ids}}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    received = b""
    while received.count(b"data: ") < 3:
        received += sock.recv(65536)
    assert engine.stats()["running"] == 1
    sock.close()
    deadline = time.monotonic() + 5
    while engine.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stats() == {"running": 0, "waiting": 0}
    assert time.monotonic() < deadline
    metrics = requests.get(slow_server.url("/metrics"), timeout=5).text
    assert "foundry_chat_cancelled_total 1.0" in metrics


def test_concurrent_streams_make_progress_together(slow_server):
    """Two streams started apart both receive tokens while the other is still generating (no queueing behind)."""
    arrivals = {0: [], 1: []}

    def run(i):
        r = chat(slow_server, max_tokens=40, stream=True, timeout=60,
                 logit_bias={str(t): -100 for t in slow_server.service.engine.eos_ids})
        for line in r.iter_lines():
            if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
                arrivals[i].append(time.monotonic())
    first = threading.Thread(target=run, args=(0,))
    first.start()
    time.sleep(0.2)
    second = threading.Thread(target=run, args=(1,))
    second.start()
    first.join(60)
    second.join(60)
    assert arrivals[0] and arrivals[1]
    assert arrivals[1][0] < arrivals[0][-1], "the second stream waited for the first to finish"
    overlap = [t for t in arrivals[0] if arrivals[1][0] <= t <= arrivals[1][-1]]
    assert len(overlap) > 5, "the streams did not interleave"


def test_api_keys_protect_everything_but_the_public_routes(tiny_model, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "primary-key").write_text("fndry-pk-" + "a" * 40)
    (keys / "secondary-key").write_text("b" * 64)
    with ChatServer(tiny_model, auth=key_auth(keys)) as server:
        r = chat(server, max_tokens=2)
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_credentials"
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert requests.get(server.url("/v1/models"), timeout=5).status_code == 200
        assert requests.get(server.url("/ready"), timeout=5).status_code == 200
        assert requests.get(server.url("/metrics"), timeout=5).status_code == 401
        ok = requests.post(server.url("/v1/chat/completions"), json={"model": "m", "messages": ASK, "max_tokens": 2},
                           headers={"api-key": "b" * 64}, timeout=10)
        assert ok.status_code == 200
        bad = requests.post(server.url("/v1/chat/completions"), json={}, timeout=10,
                            headers={"Authorization": "Bearer nope", "api-key": "b" * 64})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "ambiguous_auth"
        openai = require_module("openai")
        client = openai.OpenAI(base_url=server.url("/v1"), api_key="fndry-pk-" + "a" * 40, max_retries=0)
        assert client.chat.completions.create(model="m", messages=ASK, max_tokens=2).usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url("/v1"), api_key="wrong", max_retries=0).chat.completions.create(
                model="m", messages=ASK, max_tokens=2)


def test_route_coverage(tiny_model):
    from foundry_inference.auth.service import AuthService
    from foundry_inference.auth.settings import AuthSettings
    from tests.support.oidc_issuer import OidcIssuer
    from tests.support.routes import route_coverage_failures

    with OidcIssuer() as issuer:
        auth = AuthService.from_settings(AuthSettings(mode="entra", tenant_id=issuer.tenant_id,
                                                      client_id=issuer.client_id, authority=issuer.authority))
        with ChatServer(tiny_model, auth=auth) as server:
            no_action = {"Authorization": f"Bearer {issuer.mint(app=True, roles=['Some.Other.Role'])}"}
            assert route_coverage_failures(server.base, server.app, forbidden_headers=no_action) == []
            allowed = {"Authorization": f"Bearer {issuer.mint(app=True, roles=['Foundry.User'])}"}
            r = requests.post(server.url("/v1/chat/completions"), json={"model": "m", "messages": ASK,
                                                                         "max_tokens": 2}, headers=allowed, timeout=10)
            assert r.status_code == 200


def test_not_ready_until_loaded(tiny_model):
    from tornado.testing import AsyncHTTPTestCase  # noqa: F401 - plain HTTP through a real but unloaded app

    from foundry_inference.apps.chat.server import make_app
    from foundry_inference.apps.chat.service import ChatService
    from foundry_inference.apps.chat.settings import ChatSettings
    from tests.support.oidc_issuer import LoopbackServer
    from tests.unit.chat.harness import no_auth

    service = ChatService(ChatSettings.from_env({"FOUNDRY_MODEL_PATH": tiny_model}))
    with LoopbackServer(make_app(service, auth=no_auth())) as server:
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
        r = requests.get(server.url + "/ready", timeout=5)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"
        r = requests.post(server.url + "/v1/chat/completions", json={"model": "m", "messages": ASK}, timeout=5)
        assert r.status_code == 503


def test_stream_with_n_and_tools_auto(tiny_server):
    r = chat(tiny_server, max_tokens=8, n=2, temperature=1.0, seed=3, stream=True)
    chunks = [e for e in sse_events(r) if e != "[DONE]"]
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1}
    assert all("usage" not in c for c in chunks)
    finals = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(f["index"] for f in finals) == [0, 1]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    plain = chat(tiny_server, max_tokens=12, tools=tools).json()["choices"][0]
    streamed = [e for e in sse_events(chat(tiny_server, max_tokens=12, tools=tools, stream=True)) if e != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed)
    assert text == (plain["message"]["content"] or "")
    assert streamed[-1]["choices"][0]["finish_reason"] == plain["finish_reason"]


def test_a_grammar_the_engine_rejects_is_a_400(tiny_server):
    r = chat(tiny_server, max_tokens=5, response_format={"type": "regex", "grammar": "(unclosed"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_grammar"
    assert chat(tiny_server, max_tokens=3).status_code == 200       # the engine goes on


def test_a_grammar_error_mid_stream_is_an_error_event(tiny_server):
    events = sse_events(chat(tiny_server, max_tokens=5, stream=True,
                             response_format={"type": "regex", "grammar": "(unclosed"}))
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "invalid_grammar"
