"""Request validation: every problem is a 400 in the OpenAI envelope with the field in `param`; unsupported
features are refused, never silently ignored."""
import json
from types import SimpleNamespace

import pytest

from foundry_inference.apps.base import ApiError, openai_envelope
from foundry_inference.apps.chat.protocol import parse_chat_request

pytestmark = pytest.mark.unit

DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}
ENGINE = SimpleNamespace(supports_guidance=True, supports_logit_bias=True, vocab_size=100, name="test")
PLAIN = SimpleNamespace(supports_guidance=False, supports_logit_bias=False, vocab_size=100, name="plain")
MSG = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def parse(engine=ENGINE, max_n=4, **body):
    body.setdefault("model", "m")
    body.setdefault("messages", MSG)
    return parse_chat_request(body, engine, max_n=max_n, model_defaults=DEFAULTS)


def error(engine=ENGINE, **body):
    with pytest.raises(ApiError) as info:
        parse(engine, **body)
    err = info.value
    assert err.status == 400
    return openai_envelope(err)["error"]


def test_minimal_request_uses_the_model_defaults():
    p = parse()
    assert p.sampling.do_sample is False and p.n == 1 and p.stop == () and not p.stream
    assert p.max_tokens is None and p.tools is None and p.guidance is None


def test_temperature_switches_sampling_and_seed_aliases():
    p = parse(temperature=0.7, top_p=0.9, top_k=5, seed=3)
    assert p.sampling.do_sample and p.sampling.temperature == 0.7 and p.sampling.top_k == 5 and p.sampling.seed == 3
    assert parse(temperature=0).sampling.do_sample is False
    assert parse(random_seed=11).sampling.seed == 11
    assert parse(max_tokens=5, max_completion_tokens=7).max_tokens == 7


@pytest.mark.parametrize("body,param", [
    ({"model": None}, "model"),
    ({"model": 3}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"temperature": 3}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"n": 5}, "n"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"stop": 4}, "stop"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"100": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"modalities": "text"}, "modalities"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"verbosity": "low"}, "verbosity"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": []}}},
     "response_format.json_schema.schema"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_object"}, "logit_bias": {"1": 5}}, "logit_bias"),
])
def test_bad_fields_are_400_with_param(body, param):
    err = error(**body)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param, err


def test_engine_without_guidance_or_bias_refuses_clearly():
    err = error(PLAIN, response_format={"type": "json_object"})
    assert err["code"] == "unsupported_parameter" and "constrained decoding" in err["message"]
    assert error(PLAIN, logit_bias={"1": 2})["code"] == "unsupported_parameter"
    assert error(PLAIN, tools=[TOOL], tool_choice="required")["param"] == "tool_choice"
    assert parse(PLAIN, logit_bias={}).sampling.logit_bias == ()


def test_response_formats_become_grammars():
    p = parse(response_format={"type": "json_object"})
    assert p.json_mode and p.guidance[0] == "json_schema"
    assert json.loads(p.guidance[1])["type"] == "object"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    p = parse(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}})
    assert json.loads(p.guidance[1])["properties"] == schema["properties"]
    assert parse(response_format={"type": "text"}).guidance is None
    assert parse(response_format={"type": "regex", "grammar": "[0-9]+"}).guidance == ("regex", "[0-9]+")


def test_tools_and_tool_choice():
    p = parse(tools=[TOOL])
    assert p.tool_choice == "auto" and p.tools == [TOOL] and p.guidance is None
    assert parse(tools=[TOOL], tool_choice="none").tools is None
    p = parse(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}})
    assert p.tool_choice == "f" and json.loads(p.guidance[1])["properties"]["name"] == {"const": "f"}
    assert parse(tools=[TOOL], tool_choice="required").guidance[0] == "json_schema"
    legacy = parse(functions=[TOOL["function"]], function_call={"name": "f"})
    assert legacy.tool_choice == "f"


def test_unknown_and_inert_fields_are_ignored():
    p = parse(user="u1", metadata={"a": "b"}, store=False, service_tier="auto", parallel_tool_calls=True,
              something_new={"x": 1}, prediction={"type": "content", "content": "x"}, modalities=["text"],
              prompt_cache_key="k", safety_identifier="s", stream_options=None, audio=None)
    assert p.n == 1


def test_assistant_messages_with_tool_calls_and_legacy_function_role():
    p = parse(messages=[{"role": "user", "content": "q"},
                        {"role": "assistant", "content": None,
                         "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                        {"role": "tool", "tool_call_id": "1", "content": "r"},
                        {"role": "function", "name": "f", "content": "r2", "tool_call_id": "1"}])
    assert [m["role"] for m in p.messages] == ["user", "assistant", "tool", "tool"]


def test_stream_options():
    assert parse(stream=True, stream_options={"include_usage": True}).include_usage
    assert not parse(stream=True).include_usage
