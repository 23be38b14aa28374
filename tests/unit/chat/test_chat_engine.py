"""The onnxruntime-genai engine on the tiny random model: continuous batching reproduces single-stream greedy output
exactly (also against onnxruntime-genai's own Generator), cancellation, n, seeds, stops, bias, grammars."""
import asyncio
import json
import threading
import time

import numpy as np
import pytest

from foundry_inference.apps.chat.engine import DoneEvent, GenerationRequest, QueueFull, SamplingParams, TextEvent

pytestmark = pytest.mark.unit

PROMPTS = ["hello world", "what is the capital of france?", "red blue green", "a much longer question about the "
           "sea and the night and the light of the day, with json objects and numbers 1 2 3"]


def ids_for(engine, text):
    return tuple(engine.encode(engine.render_prompt([{"role": "user", "content": text}])))


async def collect(engine, request, delay=0.0, cancel_after=None):
    await asyncio.sleep(delay)
    gen = engine.submit(request, asyncio.get_running_loop())
    texts = [""] * request.n
    done = {}
    tokens = 0
    async for event in gen:
        if isinstance(event, TextEvent):
            texts[event.index] += event.text
            tokens += 1
            if cancel_after is not None and tokens >= cancel_after:
                gen.cancel()
        else:
            done[event.index] = event
    return texts, [done[i] for i in range(request.n)]


def run(coro):
    return asyncio.run(coro)


def og_reference(engine, prompt_ids, max_new):
    """onnxruntime-genai's own single-stream greedy loop, for comparison."""
    og = engine.og
    params = og.GeneratorParams(engine.og_model)
    params.set_search_options(max_length=len(prompt_ids) + max_new, do_sample=False)
    gen = og.Generator(engine.og_model, params)
    gen.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
    out = []
    while not gen.is_done():
        gen.generate_next_token()
        token = int(gen.get_next_tokens()[0])
        if token in engine.eos_ids:
            break
        out.append(token)
    return engine.tokenizer.decode(np.asarray(out, dtype=np.int32))


def test_batched_greedy_equals_single_stream(tiny_engine):
    engine = tiny_engine
    requests = [GenerationRequest(prompt_ids=ids_for(engine, p), max_new_tokens=24 + 8 * i)
                for i, p in enumerate(PROMPTS)]
    singles = [run(collect(engine, r))[0][0] for r in requests]
    steps, rows = engine.steps, engine.batch_rows

    async def together():   # staggered: requests join a batch that is already decoding
        return await asyncio.gather(*[collect(engine, r, delay=0.01 * i) for i, r in enumerate(requests)])
    original = engine._decode_step

    def slow_step():        # the tiny model decodes in ~0.2 ms: slow it so the requests overlap for sure
        time.sleep(0.003)
        original()
    engine._decode_step = slow_step
    try:
        batched = [texts[0] for texts, _ in run(together())]
    finally:
        engine._decode_step = original
    assert batched == singles
    assert (engine.batch_rows - rows) / (engine.steps - steps) > 1.5, "the requests were not decoded together"
    for request, single in zip(requests, singles, strict=True):
        assert single == og_reference(engine, request.prompt_ids, request.max_new_tokens)


def test_finish_reasons_and_counts(tiny_engine):
    request = GenerationRequest(prompt_ids=ids_for(tiny_engine, PROMPTS[0]), max_new_tokens=7)
    texts, (done,) = run(collect(tiny_engine, request))
    assert done.finish_reason == "length" and done.completion_tokens == 7
    eos = min(tiny_engine.eos_ids)
    forced = GenerationRequest(prompt_ids=request.prompt_ids, max_new_tokens=7,
                               sampling=SamplingParams(logit_bias=((eos, 100.0),)))
    texts, (done,) = run(collect(tiny_engine, forced))
    assert texts == [""] and done.finish_reason == "stop" and done.completion_tokens == 1


def test_stop_sequences_end_the_text_before_them(tiny_engine):
    prompt = ids_for(tiny_engine, PROMPTS[1])
    (full,), _ = run(collect(tiny_engine, GenerationRequest(prompt_ids=prompt, max_new_tokens=40)))
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip()
    (text,), (done,) = run(collect(tiny_engine, GenerationRequest(prompt_ids=prompt, max_new_tokens=40,
                                                                  stop=("never-there", stop))))
    assert text == full[:full.index(stop)]
    assert done.finish_reason == "stop" and stop not in text


def test_logit_bias_forces_a_token(tiny_engine):
    token = 100
    piece = tiny_engine.tokenizer.decode(np.array([token], dtype=np.int32))
    request = GenerationRequest(prompt_ids=ids_for(tiny_engine, PROMPTS[0]), max_new_tokens=5,
                                sampling=SamplingParams(logit_bias=((token, 100.0),)))
    (text,), _ = run(collect(tiny_engine, request))
    assert text == piece * 5


def test_n_choices_and_seeds(tiny_engine):
    prompt = ids_for(tiny_engine, PROMPTS[2])
    greedy, done = run(collect(tiny_engine, GenerationRequest(prompt_ids=prompt, max_new_tokens=12, n=3)))
    (single,), _ = run(collect(tiny_engine, GenerationRequest(prompt_ids=prompt, max_new_tokens=12)))
    assert greedy == [single] * 3 and [d.index for d in done] == [0, 1, 2]
    sampled = GenerationRequest(prompt_ids=prompt, max_new_tokens=16, n=2,
                                sampling=SamplingParams(do_sample=True, temperature=1.5, seed=42))
    first, _ = run(collect(tiny_engine, sampled))
    again, _ = run(collect(tiny_engine, sampled))
    assert first == again, "the same seed must give the same output"
    assert first[0] != first[1], "the choices of one request draw different samples"
    other = GenerationRequest(prompt_ids=prompt, max_new_tokens=16,
                              sampling=SamplingParams(do_sample=True, temperature=1.5, seed=43))
    assert run(collect(tiny_engine, other))[0][0] != first[0]


def test_cancel_stops_generation_and_frees_the_slot(tiny_engine, monkeypatch):
    """The engine stops a choice at the first step after the cancel reaches it. The tiny model makes a token in
    ~0.2 ms, faster than a busy event loop reads them, so the engine holds after `gate` steps until the cancel is
    queued: how many tokens were made then no longer depends on the machine's load."""
    gate, cancel_queued, steps = 8, threading.Event(), []
    original_step, original_cancel = tiny_engine._decode_step, tiny_engine._cancel

    def gated_step():
        original_step()
        steps.append(1)
        if len(steps) >= gate:
            assert cancel_queued.wait(timeout=60), "the cancel never reached the engine"

    def cancel(gen):
        original_cancel(gen)
        cancel_queued.set()
    monkeypatch.setattr(tiny_engine, "_decode_step", gated_step)
    monkeypatch.setattr(tiny_engine, "_cancel", cancel)
    no_eos = tuple((t, -100.0) for t in tiny_engine.eos_ids)
    request = GenerationRequest(prompt_ids=ids_for(tiny_engine, PROMPTS[3]),
                                max_new_tokens=tiny_engine.context_length, sampling=SamplingParams(logit_bias=no_eos))
    texts, (done,) = run(collect(tiny_engine, request, cancel_after=3))
    assert done.finish_reason == "cancelled"
    assert 3 <= done.completion_tokens <= gate + 1, "a step ran after the cancel was queued"
    assert len(steps) <= gate
    assert tiny_engine.stats() == {"running": 0, "waiting": 0}


def test_queue_full_is_raised_at_submit(tiny_engine):
    async def flood():
        loop = asyncio.get_running_loop()
        prompt = ids_for(tiny_engine, PROMPTS[0])
        gens = []
        with pytest.raises(QueueFull) as info:
            for _ in range(tiny_engine.capacity + 1):
                gens.append(tiny_engine.submit(GenerationRequest(prompt_ids=prompt, max_new_tokens=50), loop))
        assert len(gens) == tiny_engine.capacity and info.value.retry_after >= 1
        for gen in gens:
            gen.cancel()
        for gen in gens:
            async for _ in gen:
                pass
        return tiny_engine._inflight
    assert run(flood()) == 0


def test_generation_stops_at_the_context_length(tiny_engine):
    prompt = ids_for(tiny_engine, PROMPTS[0])
    no_eos = tuple((t, -100.0) for t in tiny_engine.eos_ids)
    request = GenerationRequest(prompt_ids=prompt, max_new_tokens=10_000, sampling=SamplingParams(logit_bias=no_eos))
    _, (done,) = run(collect(tiny_engine, request))
    assert done.finish_reason == "length"
    assert len(prompt) + done.completion_tokens == tiny_engine.context_length


def test_grammar_constrains_even_a_random_model(tiny_engine):
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
              "additionalProperties": False, "x-guidance": {"whitespace_flexible": False}}
    request = GenerationRequest(prompt_ids=ids_for(tiny_engine, PROMPTS[1]), max_new_tokens=40,
                                guidance=("json_schema", json.dumps(schema)))
    (text,), (done,) = run(collect(tiny_engine, request))
    assert json.loads(text)["answer"] in ("yes", "no")
    assert done.finish_reason == "stop"


def test_guided_and_batched_requests_run_side_by_side(tiny_engine):
    plain = GenerationRequest(prompt_ids=ids_for(tiny_engine, PROMPTS[0]), max_new_tokens=30)
    (alone,), _ = run(collect(tiny_engine, plain))
    guided = GenerationRequest(prompt_ids=ids_for(tiny_engine, PROMPTS[2]), max_new_tokens=30,
                               guidance=("regex", "[a-z]{5,20}"))

    async def both():
        return await asyncio.gather(collect(tiny_engine, plain), collect(tiny_engine, guided))
    (p_texts, _), (g_texts, _) = run(both())
    assert p_texts == [alone]
    assert g_texts[0].isalpha() and 5 <= len(g_texts[0]) <= 20


def test_done_events_cover_every_choice_on_cancel_before_start(tiny_engine):
    async def go():
        gen = tiny_engine.submit(GenerationRequest(prompt_ids=ids_for(tiny_engine, PROMPTS[0]), max_new_tokens=5,
                                                   n=2), asyncio.get_running_loop())
        gen.cancel()
        return [e async for e in gen]
    events = run(go())
    done = [e for e in events if isinstance(e, DoneEvent)]
    assert sorted(e.index for e in done) == [0, 1]


def test_min_tokens_masks_the_end_of_turn(tiny_engine):
    eos = min(tiny_engine.eos_ids)
    prefer_eos = SamplingParams(logit_bias=((eos, 50.0),))
    request = GenerationRequest(prompt_ids=ids_for(tiny_engine, PROMPTS[0]), max_new_tokens=20, min_new_tokens=6,
                                sampling=prefer_eos)
    _, (done,) = run(collect(tiny_engine, request))
    assert done.finish_reason == "stop" and done.completion_tokens == 7


def test_requests_arriving_together_are_prefilled_two_at_a_time_with_identical_outputs(tiny_engine):
    # one prefill on the engine thread, one on the prefill worker, at the same time; a worker's prompt joins the
    # batch through its own KV buffer, copied into the row: the outputs must not change by a token
    engine = tiny_engine
    requests = [GenerationRequest(prompt_ids=ids_for(engine, p), max_new_tokens=16) for p in PROMPTS]
    singles = [run(collect(engine, r))[0][0] for r in requests]
    worker = engine.prefill_workers[0]
    jobs = worker.jobs
    original = engine.run_prompt

    def slow_prompt(prompt, bind_kv):     # the tiny model prefills in ~1 ms: make a prefill take 0.2 s
        time.sleep(0.2)
        return original(prompt, bind_kv)

    async def first_token_and_text(request):
        started = time.perf_counter()
        gen = engine.submit(request, asyncio.get_running_loop())
        first, text = None, ""
        async for event in gen:
            if isinstance(event, TextEvent):
                first = first or time.perf_counter() - started
                text += event.text
        return first, text

    async def together():
        return await asyncio.gather(*[first_token_and_text(r) for r in requests])
    engine.run_prompt = slow_prompt
    try:
        results = run(together())
    finally:
        del engine.run_prompt
    assert [text for _first, text in results] == singles
    assert worker.jobs - jobs >= 2                         # the worker took its share
    # 4 prompts of 0.2 s: one after another the last first token would come after 0.8 s; two at a time, 0.4 s
    assert max(first for first, _text in results) < 0.65, results


def test_chunked_prefill_and_kept_prompt_bindings_reproduce_genai(tiny_model):
    # prompts longer than prefill_chunk run in chunks through the row's kept binding (its KV bound once), and a row
    # prefilled again for a shorter prompt rebinds its inputs: every output must equal onnxruntime-genai's own
    from foundry_inference.apps.chat.engine import open_engine
    from foundry_inference.apps.chat.settings import ChatSettings
    engine = open_engine(tiny_model, ChatSettings(model_path=tiny_model, model_id="tiny", max_batch=2, queue_depth=4,
                                                  prefill_chunk=16, warmup=False))
    engine.load()
    try:
        order = [PROMPTS[3], PROMPTS[0], PROMPTS[3], PROMPTS[1]]          # long (3 chunks), short, long, short
        assert len(ids_for(engine, PROMPTS[3])) > 2 * 16
        for text in order:
            ids = ids_for(engine, text)
            (got,), _done = run(collect(engine, GenerationRequest(prompt_ids=ids, max_new_tokens=12)))
            assert got == og_reference(engine, ids, 12)
        assert len(engine._prompt_bindings) == 1                    # one row used, one kept binding
    finally:
        engine.close()
