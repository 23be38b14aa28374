"""logprobs / top_logprobs on chat completions, checked against a log-softmax of the model's logits computed here
independently: onnxruntime-genai's own Generator runs the same model folder over the same prompt and tokens."""
import json
import math

import numpy as np
import openai
import pytest
import requests

from tests.unit.chat.test_chat_http import ASK, chat, sse_events

pytestmark = pytest.mark.unit


def reference_logprobs(model_folder, prompt_ids, steps):
    """Per step: the log-softmax (float64) of the logits onnxruntime-genai's Generator produces, greedy."""
    import onnxruntime_genai as og
    model = og.Model(model_folder)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + steps + 1, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
    out = []
    for _ in range(steps):
        logits = np.asarray(generator.get_logits(), dtype=np.float64).reshape(-1)
        m = logits.max()
        out.append(logits - (m + math.log(np.exp(logits - m).sum())))
        generator.generate_next_token()
    return out


def no_eos(server):
    return {str(t): -100 for t in server.service.engine.eos_ids}


def test_logprobs_match_an_independent_log_softmax(tiny_server, tiny_model):
    engine = tiny_server.service.engine
    prompt = engine.encode(engine.render_prompt(ASK))
    r = chat(tiny_server, max_tokens=8, logprobs=True, top_logprobs=5, logit_bias=no_eos(tiny_server))
    assert r.status_code == 200, r.text
    (choice,) = r.json()["choices"]
    content = choice["logprobs"]["content"]
    assert len(content) == 8 == r.json()["usage"]["completion_tokens"]
    # the reference runs greedy without the bias: the same tokens while no end-of-turn token is the best
    reference = reference_logprobs(tiny_model, prompt, 8)
    for entry, ref in zip(content, reference, strict=True):
        best = np.sort(ref)[::-1][:5]
        assert entry["logprob"] == pytest.approx(best[0], abs=1e-3)        # greedy: the chosen token is the best
        assert [t["logprob"] for t in entry["top_logprobs"]] == pytest.approx(best.tolist(), abs=1e-3)
        assert entry["bytes"] == list(entry["token"].encode())
        assert entry["logprob"] <= 0
    assert "".join(e["token"] for e in content) == choice["message"]["content"]


def test_streamed_logprobs_equal_the_collected_ones(tiny_server):
    plain = chat(tiny_server, max_tokens=10, logprobs=True, top_logprobs=3).json()
    r = chat(tiny_server, max_tokens=10, logprobs=True, top_logprobs=3, stream=True)
    chunks = [c for c in sse_events(r)[:-1] if c["choices"]]
    streamed = [e for c in chunks if c["choices"][0]["logprobs"] for e in c["choices"][0]["logprobs"]["content"]]
    assert streamed == plain["choices"][0]["logprobs"]["content"]
    assert all(len(e["top_logprobs"]) == 3 for e in streamed)


def test_openai_client_reads_logprobs(tiny_server):
    client = openai.OpenAI(base_url=tiny_server.url("/v1"), api_key="unused")
    answer = client.chat.completions.create(model="tiny-chat", messages=ASK, max_tokens=4, logprobs=True,
                                            top_logprobs=2)
    tokens = answer.choices[0].logprobs.content
    assert tokens and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)
    # the top alternative is the greedy choice itself
    assert all(t.top_logprobs[0].logprob == pytest.approx(t.logprob) for t in tokens)
    plain = client.chat.completions.create(model="tiny-chat", messages=ASK, max_tokens=4)
    assert plain.choices[0].logprobs is None


@pytest.mark.parametrize("body, param", [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"logprobs": True, "response_format": {"type": "json_object"}}, "logprobs"),
])
def test_bad_logprobs_requests_are_400(tiny_server, body, param):
    r = requests.post(tiny_server.url("/v1/chat/completions"),
                      data=json.dumps({"model": "tiny-chat", "messages": ASK, **body}), timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
