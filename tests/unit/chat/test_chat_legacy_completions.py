"""Legacy text completions (`POST /v1/completions`) on the tiny model over real HTTP and the official `openai`
client: raw prompts (no chat template), prompt lists and token ids, echo, stop, logprobs, streaming, exact usage."""
import json

import openai
import pytest
import requests

from tests.unit.chat.test_chat_http import sse_events

pytestmark = pytest.mark.unit

PROMPT = "the capital of france is"


def complete(server, **body):
    body.setdefault("model", "tiny-chat")
    return requests.post(server.url("/v1/completions"), json=body, timeout=30, stream=bool(body.get("stream")))


def no_eos(server):
    return {str(t): -100 for t in server.service.engine.eos_ids}


def test_shape_usage_and_the_raw_prompt(tiny_server):
    engine = tiny_server.service.engine
    r = complete(tiny_server, prompt=PROMPT, max_tokens=6, logit_bias=no_eos(tiny_server))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == "tiny-chat"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length" and choice["logprobs"] is None
    assert body["usage"] == {"prompt_tokens": len(engine.encode(PROMPT)), "completion_tokens": 6,
                             "total_tokens": len(engine.encode(PROMPT)) + 6}
    # the same prompt as token ids gives the same greedy text
    ids = engine.encode(PROMPT)
    again = complete(tiny_server, prompt=ids, max_tokens=6, logit_bias=no_eos(tiny_server)).json()
    assert again["choices"][0]["text"] == choice["text"]


def test_default_max_tokens_is_16(tiny_server):
    body = complete(tiny_server, prompt=PROMPT, logit_bias=no_eos(tiny_server)).json()
    assert body["usage"]["completion_tokens"] == 16


def test_prompt_list_n_and_echo(tiny_server):
    body = complete(tiny_server, prompt=[PROMPT, "red blue"], n=2, max_tokens=3, echo=True, seed=5,
                    temperature=1.0).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert all(c["text"].startswith(PROMPT) for c in body["choices"][:2])
    assert all(c["text"].startswith("red blue") for c in body["choices"][2:])
    engine = tiny_server.service.engine
    assert body["usage"]["prompt_tokens"] == len(engine.encode(PROMPT)) + len(engine.encode("red blue"))


def test_max_tokens_0_with_echo_returns_the_prompt(tiny_server):
    body = complete(tiny_server, prompt=PROMPT, max_tokens=0, echo=True).json()
    assert body["choices"][0]["text"] == PROMPT and body["usage"]["completion_tokens"] == 0
    chunks = sse_events(complete(tiny_server, prompt=PROMPT, max_tokens=0, echo=True, stream=True))[:-1]
    assert "".join(c["choices"][0]["text"] for c in chunks) == PROMPT
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_logprobs_are_the_legacy_lists(tiny_server):
    body = complete(tiny_server, prompt=PROMPT, max_tokens=5, logprobs=3, logit_bias=no_eos(tiny_server)).json()
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 5
    assert "".join(lp["tokens"]) == body["choices"][0]["text"]
    assert lp["text_offset"][0] == 0 and lp["text_offset"][1] == len(lp["tokens"][0])
    for value, top in zip(lp["token_logprobs"], lp["top_logprobs"], strict=True):
        assert len(top) <= 3 and max(top.values()) == pytest.approx(value)      # greedy: the best one was chosen


def test_stream_equals_the_collected_answer(tiny_server):
    plain = complete(tiny_server, prompt=PROMPT, max_tokens=8).json()
    r = complete(tiny_server, prompt=PROMPT, max_tokens=8, stream=True, stream_options={"include_usage": True})
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == plain["choices"][0]["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] \
        == [plain["choices"][0]["finish_reason"]]
    assert chunks[-1]["usage"] == plain["usage"]


def test_openai_client_completions(tiny_server):
    client = openai.OpenAI(base_url=tiny_server.url("/v1"), api_key="unused")
    answer = client.completions.create(model="tiny-chat", prompt=PROMPT, max_tokens=4, stop=["zzz"])
    assert answer.object == "text_completion" and answer.usage.completion_tokens <= 4
    pieces = [c.choices[0].text for c in client.completions.create(model="tiny-chat", prompt=PROMPT, max_tokens=4,
                                                                     stream=True) if c.choices]
    assert "".join(pieces) == answer.choices[0].text


def test_stop_ends_before_the_stop_string(tiny_server):
    free = complete(tiny_server, prompt=PROMPT, max_tokens=12, logit_bias=no_eos(tiny_server)).json()
    text = free["choices"][0]["text"]
    cut = text[3:5]
    if not cut.strip():
        pytest.fail(f"the tiny model's text {text!r} has no usable stop string")
    stopped = complete(tiny_server, prompt=PROMPT, max_tokens=12, stop=[cut], logit_bias=no_eos(tiny_server)).json()
    assert stopped["choices"][0]["text"] == text[:text.index(cut)]
    assert stopped["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("body, param", [
    ({}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": [1, 10 ** 9]}, "prompt"),
    ({"prompt": [[1, 2], "x", None]}, "prompt"),
    ({"prompt": ["x"] * 65}, "prompt"),
    ({"prompt": ["x"] * 30}, "prompt"),                 # 30 sequences: more than 4 slots + 16 queued, ever
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"prompt": "x", "logprobs": 1, "echo": True}, "echo"),
    ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "x", "temperature": 3}, "temperature"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "model": 3}, "model"),
    ({"prompt": "red " * 300}, "prompt"),
])
def test_bad_requests_are_400_naming_the_field(tiny_server, body, param):
    body = {"model": "tiny-chat", **body}
    r = requests.post(tiny_server.url("/v1/completions"), data=json.dumps(body), timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text
