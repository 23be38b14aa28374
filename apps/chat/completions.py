"""OpenAI legacy text completions, `POST /v1/completions`, on the chat engine: the prompt is raw text (or token ids),
no chat template.

`prompt` is a string, a list of strings, a list of token ids or a list of lists of token ids; each prompt gets `n`
choices, numbered prompt-major (choice `i * n + j`) as OpenAI numbers them. Sampling fields, `stop`, `seed`,
`logit_bias`, `stream` and `stream_options` mean what they mean on chat completions; `echo` puts the prompt in front
of the text; `logprobs` (0..5) returns the legacy parallel lists. Refused with a 400 naming the field: `suffix`
(no fill-in-the-middle model), `best_of` other than `n`, and `echo` together with `logprobs` (prompt logprobs are not
computed).
"""
import asyncio

from foundry_inference.apps.base import openai_envelope
from foundry_inference.apps.chat import protocol
from foundry_inference.apps.chat.engine import DoneEvent, GenerationRequest, QueueFull
from foundry_inference.apps.chat.handlers import ChatBase, EventStream, generation_error, rate_limited
from foundry_inference.apps.chat.logprobs import MAX_TOP_LEGACY, legacy
from foundry_inference.apps.chat.metrics import RequestTimer
from foundry_inference.auth.tornado import AuthMixin

DEFAULT_MAX_TOKENS = 16          # OpenAI's default for legacy completions
MAX_PROMPTS = 64


def parse_prompts(value, engine):
    """[(text, token ids)] for each prompt of the request."""
    if value is None:
        raise protocol.invalid("'prompt' is required", "prompt", "missing_required_parameter")
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise protocol.invalid("'prompt' must be a string, an array of strings, an array of token ids or an array "
                               "of arrays of token ids", "prompt", "invalid_type")
    if len(items) > MAX_PROMPTS:
        raise protocol.invalid(f"'prompt' takes at most {MAX_PROMPTS} prompts, got {len(items)}", "prompt")
    out = []
    for item in items:
        if isinstance(item, str):
            ids = engine.encode(item)
            text = item
        elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            if any(not 0 <= t < engine.vocab_size for t in item):
                raise protocol.invalid(f"'prompt' token ids must be within the vocabulary (0..{engine.vocab_size - 1})",
                                       "prompt")
            ids = list(item)
            text = engine.decode(ids) if ids else ""
        else:
            raise protocol.invalid("each prompt must be a string or an array of token ids", "prompt", "invalid_type")
        if not ids:
            raise protocol.invalid("a prompt must not be empty", "prompt")
        out.append((text, ids))
    return out


def parse_request(body, engine, *, max_n, model_defaults):
    model = protocol.model_name(body)
    prompts = parse_prompts(body.get("prompt"), engine)
    suffix = body.get("suffix")
    if suffix not in (None, ""):
        raise protocol.invalid("'suffix' (fill-in-the-middle) is not supported by this server", "suffix",
                               "unsupported_parameter")
    max_tokens = protocol.number(body, "max_tokens", 0, 1 << 31, DEFAULT_MAX_TOKENS, integer=True)
    sampling = protocol.sampling_params(body, engine, model_defaults)
    n = protocol.choice_count(body, max_n)
    best_of = protocol.number(body, "best_of", 1, 1 << 20, None, integer=True)
    if best_of not in (None, n):
        raise protocol.invalid("'best_of' other than 'n' is not supported by this server", "best_of",
                               "unsupported_parameter")
    logprobs = protocol.number(body, "logprobs", 0, MAX_TOP_LEGACY, None, integer=True)
    echo = protocol.flag(body, "echo")
    if echo and logprobs is not None:
        raise protocol.invalid("'echo' together with 'logprobs' (prompt logprobs) is not supported by this server",
                               "echo", "unsupported_parameter")
    stop = protocol.stop_sequences(body.get("stop"))
    stream, include_usage = protocol.stream_flags(body)
    return dict(model=model, prompts=prompts, max_tokens=max_tokens, sampling=sampling, n=n, logprobs=logprobs,
                echo=echo, stop=stop, stream=stream, include_usage=include_usage)


def completion_id():
    return "cmpl-" + protocol.completion_id()[len("chatcmpl-"):]


def choice(index, text, finish_reason, logprobs=None):
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def answer(cid, model, created, choices, usage_value, obj="text_completion"):
    body = {"id": cid, "object": obj, "created": created, "model": model, "system_fingerprint": None,
            "choices": choices}
    if usage_value is not None:
        body["usage"] = usage_value
    return body


async def merged(gens):
    """(generation number, event) from several generations, in arrival order."""
    queue = asyncio.Queue()

    async def pump(k, gen):
        async for event in gen:
            await queue.put((k, event))
        await queue.put((k, None))

    tasks = [asyncio.ensure_future(pump(k, gen)) for k, gen in enumerate(gens)]
    try:
        open_ = len(gens)
        while open_:
            k, event = await queue.get()
            if event is None:
                open_ -= 1
            else:
                yield k, event
    finally:
        for task in tasks:
            task.cancel()


class CompletionsHandler(EventStream, AuthMixin, ChatBase):
    endpoint = "completions"
    _gens = ()

    async def post(self):
        service = self.service
        engine = self.engine_for("chat")
        self.max_body_bytes = service.settings.max_body_bytes
        p = self._p = parse_request(self.json_body(), engine, max_n=service.settings.max_n,
                                    model_defaults=engine.config.search)
        self.check_model(p["model"])
        sequences = len(p["prompts"]) * p["n"]
        capacity = getattr(engine, "capacity", sequences)
        if sequences > capacity:                    # more than the engine can ever hold: a 429 would never clear
            raise protocol.invalid(f"{len(p['prompts'])} prompts x n={p['n']} is {sequences} sequences; this server "
                                   f"runs and queues at most {capacity} (FOUNDRY_CHAT_MAX_BATCH + "
                                   f"FOUNDRY_CHAT_QUEUE_DEPTH)", "prompt")
        requests = []
        for _text, ids in p["prompts"]:
            room = engine.context_length - len(ids)
            if room <= 0:
                raise protocol.context_error(len(ids), engine.context_length, "prompt")
            requests.append(GenerationRequest(prompt_ids=tuple(ids), max_new_tokens=min(p["max_tokens"], room),
                                              sampling=p["sampling"], stop=p["stop"], n=p["n"],
                                              logprobs=p["logprobs"]))
        loop = asyncio.get_running_loop()
        gens = []
        try:
            for request in requests:
                if request.max_new_tokens == 0:
                    gens.append(None)
                else:
                    gens.append(engine.submit(request, loop))
        except QueueFull as full:
            for gen in gens:
                if gen is not None:
                    gen.cancel()
            service.metrics.rejected.labels(self.endpoint).inc()
            raise rate_limited(full) from None
        self._gens = [g for g in gens if g is not None]
        self._slots = [k for k, g in enumerate(gens) if g is not None]    # live generation -> prompt number
        prompt_tokens = sum(len(ids) for _t, ids in p["prompts"])
        service.metrics.prompt(prompt_tokens)
        self._timer = RequestTimer(service.metrics, service.tracing, self, "text_completion", requests[0])
        self._usage_prompt = prompt_tokens
        self._cid, self._created = completion_id(), protocol.now()
        if p["stream"]:
            await self._stream()
        else:
            await self._collect()

    def _index(self, k, event):
        return self._slots[k] * self._p["n"] + event.index

    async def _collect(self):
        p = self._p
        count = len(p["prompts"]) * p["n"]
        texts = [[p["prompts"][i // p["n"]][0]] if p["echo"] else [] for i in range(count)]
        scores = [[] for _ in range(count)]
        finish = ["length"] * count          # max_tokens 0: nothing generated
        total, finished = 0, []
        async for k, event in merged(self._gens):
            index = self._index(k, event)
            if isinstance(event, DoneEvent):
                finished.append(event)
                finish[index] = event.finish_reason
                total += event.completion_tokens
            else:
                self._timer.token()
                texts[index].append(event.text)
                if event.logprobs:
                    scores[index].extend(event.logprobs)
        self._timer.finished(self._gens, finished)
        if any(g.cancelled for g in self._gens):
            return
        for event in finished:
            if event.finish_reason == "error":
                raise generation_error(event.error)
        choices = [choice(i, "".join(texts[i]), finish[i],
                          None if p["logprobs"] is None else legacy(scores[i])) for i in range(count)]
        self.write_json(answer(self._cid, self.service.model_id, self._created, choices,
                               protocol.usage(self._usage_prompt, total)))

    async def _stream(self):
        p = self._p
        model, cid, created = self.service.model_id, self._cid, self._created
        self._start_events()
        count = len(p["prompts"]) * p["n"]
        offsets = [0] * count
        for i in range(count):
            live = (i // p["n"]) in self._slots
            text = p["prompts"][i // p["n"]][0] if p["echo"] else ""
            if text or not live:
                self._send(answer(cid, model, created, [choice(i, text, None if live else "length")], None))
        if not await self._flush():
            return
        total, error, finished = 0, None, []
        async for k, event in merged(self._gens):
            index = self._index(k, event)
            if isinstance(event, DoneEvent):
                finished.append(event)
                total += event.completion_tokens
                if event.finish_reason == "error":
                    error = event.error or "generation failed"
                elif event.finish_reason != "cancelled":
                    self._send(answer(cid, model, created, [choice(index, "", event.finish_reason)], None))
            else:
                self._timer.token()
                scores = None
                if p["logprobs"] is not None:
                    scores = legacy(event.logprobs or (), offsets[index])
                    offsets[index] += len(event.text)
                self._send(answer(cid, model, created, [choice(index, event.text, None, scores)], None))
            if not any(g.pending for g in self._gens) and not await self._flush(wait=False):
                return
        self._timer.finished(self._gens, finished)
        if any(g.cancelled for g in self._gens):
            return
        if error:
            self._send(openai_envelope(generation_error(error)))
        if p["include_usage"]:
            self._send(answer(cid, model, created, [], protocol.usage(self._usage_prompt, total)))
        await self._end_events()

    def _cancel(self):
        for gen in self._gens:
            if not gen.finished and not gen.cancelled:
                gen.cancel()
                self.service.metrics.cancelled.inc()

