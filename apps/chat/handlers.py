"""The routes of the chat server. Thin: authentication is the mixin's prepare(), validation is protocol.py's,
generation is the engine's; this module moves events to the wire (JSON or server-sent events)."""
import asyncio
import json
import logging
import time

from tornado.iostream import StreamClosedError

from foundry_inference.apps.base import ApiError, BaseHandler, NotFoundHandler, ProbeRoutes, openai_envelope
from foundry_inference.apps.chat import protocol
from foundry_inference.apps.chat.engine import DoneEvent, GenerationRequest, QueueFull
from foundry_inference.apps.chat.logprobs import chat_logprobs
from foundry_inference.apps.chat.metrics import RequestTimer
from foundry_inference.apps.chat.template import TemplateError
from foundry_inference.apps.chat.textstream import ToolCallFilter
from foundry_inference.auth.tornado import AuthMixin

log = logging.getLogger("foundry_inference.chat")


def rate_limited(full, what="requests"):
    return ApiError(429, "rate_limit_error", f"Too many {what} in flight ({full.depth}); retry after "
                    f"{full.retry_after} s", code="rate_limit_exceeded",
                    headers={"Retry-After": str(full.retry_after)})


def generation_error(message):
    from foundry_inference.apps.chat.genai import GRAMMAR_ERROR
    if message and message.startswith(GRAMMAR_ERROR):
        return protocol.invalid(message, "response_format", "invalid_grammar")
    return ApiError(500, "server_error", message or "generation failed", code="generation_failed")


def not_ready(service):
    if service.load_error:
        return ApiError(503, "service_unavailable", f"The model failed to load: {service.load_error}",
                        code="model_not_loaded")
    return ApiError(503, "service_unavailable", "The model is still loading", code="model_not_loaded")


class ChatBase(BaseHandler):
    envelope = staticmethod(openai_envelope)
    endpoint = "other"

    @property
    def service(self):
        return self.application.settings["chat"]

    def compute_etag(self):
        return None

    def not_ready(self):
        return not_ready(self.service)

    def ready_fields(self):
        return {"model": self.service.model_id}

    def engine_for(self, task):
        service = self.service
        if not service.ready:
            raise not_ready(service)
        engine = service.engine
        if engine.task != task:
            raise ApiError(400, "invalid_request_error",
                           f"The served model {service.model_id} is a {engine.task} model; this endpoint needs a "
                           f"{task} model", code="model_not_supported", errors=[{"field": "model"}])
        return engine

    def check_model(self, model):
        service = self.service
        if service.settings.strict_model and model not in (None, service.model_id):
            raise ApiError(404, "invalid_request_error", f"The model {model!r} does not exist on this server; it "
                           f"serves {service.model_id!r}", code="model_not_found", errors=[{"field": "model"}])

    def on_finish(self):
        if self.endpoint != "other":
            self.service.metrics.observe(self.endpoint, self.get_status(), self.request.request_time())


class HealthHandler(ProbeRoutes.Health, AuthMixin, ChatBase):
    pass


class ReadyHandler(ProbeRoutes.Ready, AuthMixin, ChatBase):
    pass


class ModelsHandler(AuthMixin, ChatBase):
    public = True

    def get(self):
        service = self.service
        self.write_json({"object": "list", "data": [
            {"id": service.model_id, "object": "model", "created": service.created, "owned_by": "foundry-local"}]})


class MetricsHandler(AuthMixin, ChatBase):
    def get(self):
        payload, content_type = self.service.metrics.render()
        self.set_header("Content-Type", content_type)
        self.finish(payload)


class EventStream:
    """Server-sent events for a handler generating with the engine: headers, one `data:` frame per object, flushes
    with backpressure, and `_cancel()` (the handler's) when the client goes away."""

    def _start_events(self):
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")          # the nginx sidecar must not buffer the stream
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.set_nodelay(True)    # small token chunks must not wait for Nagle + the client's delayed ACK

    async def _end_events(self):
        self.write("data: [DONE]\n\n")
        try:
            await self.finish()
        except StreamClosedError:
            pass

    def _send(self, obj):
        self.write("data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n\n")

    async def _flush(self, wait=True):
        """Send what was written. wait=False (per token): only wait for the previous flush if it is still
        pending, so a fast stream never waits for its own socket write to complete, but a slow reader still
        holds the generator back by one flush (backpressure)."""
        pending = getattr(self, "_pending_flush", None)
        try:
            if pending is not None and not pending.done():
                await pending
            future = self.flush()
            if wait:
                await future
                self._pending_flush = None
            elif future.done():             # written at once (the usual case): nothing to wait for or schedule
                self._pending_flush = None
                self._flushed(future)
            else:
                future.add_done_callback(self._flushed)
                self._pending_flush = future
            return True
        except StreamClosedError:
            self._cancel()
            return False

    def _flushed(self, future):
        if future.cancelled() or future.exception() is not None:    # retrieved: no "never retrieved" warning
            self._cancel()

    def on_connection_close(self):
        self._cancel()


class ChatCompletionsHandler(EventStream, AuthMixin, ChatBase):
    endpoint = "chat"
    _gen = None

    async def post(self):
        service = self.service
        engine = self.engine_for("chat")
        self.max_body_bytes = service.settings.max_body_bytes
        body = self.json_body()
        params = protocol.parse_chat_request(body, engine, max_n=service.settings.max_n,
                                             model_defaults=engine.config.search)
        self.check_model(params.model)
        try:
            prompt = engine.render_prompt(params.messages, params.tools)
        except TemplateError as exc:
            raise protocol.invalid(str(exc), "messages") from None
        ids = engine.encode(prompt)
        room = engine.context_length - len(ids)
        if room <= 0:
            raise protocol.context_error(len(ids), engine.context_length)
        max_new = room if params.max_tokens is None else min(params.max_tokens, room)
        request = GenerationRequest(prompt_ids=tuple(ids), max_new_tokens=max_new, sampling=params.sampling,
                                    stop=params.stop, guidance=params.guidance, n=params.n,
                                    min_new_tokens=min(params.min_tokens, max_new), logprobs=params.logprobs)
        try:
            self._gen = engine.submit(request, asyncio.get_running_loop())
        except QueueFull as full:
            service.metrics.rejected.labels(self.endpoint).inc()
            raise rate_limited(full) from None
        service.metrics.prompt(len(ids))
        self._timer = RequestTimer(service.metrics, service.tracing, self, "chat", request)
        self._params = params
        self._filters = [self._tool_filter(params) for _ in range(params.n)]
        self._cid, self._created = protocol.completion_id(), protocol.now()
        if params.stream:
            await self._stream()
        else:
            await self._collect()

    def _tool_filter(self, params):
        if not params.tools or params.json_mode:
            return None
        names = [t["function"]["name"] for t in params.tools]
        return ToolCallFilter(names, mode="forced" if params.guidance else "auto")

    async def _collect(self):
        gen, params = self._gen, self._params
        texts = [[] for _ in range(params.n)]
        scores = [[] for _ in range(params.n)]
        done = {}
        async for event in gen:
            if isinstance(event, DoneEvent):
                done[event.index] = event
            else:
                self._timer.token()
                texts[event.index].append(event.text)
                if event.logprobs:
                    scores[event.index].extend(event.logprobs)
        self._timer.finished([gen], list(done.values()))
        if gen.cancelled:
            return                                  # the client went away
        choices, total = [], 0
        for index in range(params.n):
            event = done[index]
            if event.finish_reason == "error":
                raise generation_error(event.error)
            total += event.completion_tokens
            content, calls = "".join(texts[index]), None
            filt = self._filters[index]
            if filt is not None:
                filt.feed(content)
                rest, found = filt.finish()
                content = "".join(filt.content)
                if found:
                    calls = [{"id": protocol.tool_call_id(), "type": "function", "function": c} for c in found]
            finish = "tool_calls" if calls else event.finish_reason
            choices.append(protocol.choice(index, content if (content or not calls) else None, calls, finish,
                                           None if params.logprobs is None else chat_logprobs(scores[index])))
        self.write_json(protocol.completion(self._cid, self.service.model_id, self._created, choices,
                                            gen.prompt_tokens, total))

    async def _stream(self):
        gen, params = self._gen, self._params
        self._start_events()
        model, usage_on = self.service.model_id, params.include_usage
        self._content_frames = [self._content_frame(index, model, usage_on) for index in range(params.n)]
        total = 0
        for index in range(params.n):
            self._send(protocol.chunk(self._cid, model, self._created,
                                      [protocol.delta(index, role="assistant", content="", refusal=None)], usage_on))
        if not await self._flush():
            return
        error, finished = None, []
        async for event in gen:
            if isinstance(event, DoneEvent):
                total += event.completion_tokens
                finished.append(event)
                if event.finish_reason == "cancelled":
                    continue
                if event.finish_reason == "error":
                    error = event.error or "generation failed"
                    continue
                self._finish_choice(event, model, usage_on)
            else:
                self._timer.token()
                filt = self._filters[event.index]
                text = filt.feed(event.text) if filt is not None else event.text
                if event.logprobs:
                    self._send(protocol.chunk(self._cid, model, self._created, [protocol.delta(
                        event.index, content=text, logprobs=chat_logprobs(event.logprobs))], usage_on))
                elif text:
                    prefix, suffix = self._content_frames[event.index]
                    self.write(prefix + json.dumps(text, ensure_ascii=False).encode() + suffix)
            if not gen.pending and not await self._flush(wait=False):
                return
        self._timer.finished([gen], finished)
        if gen.cancelled:
            return
        if error:
            self._send(openai_envelope(generation_error(error)))
        if usage_on:
            self._send(protocol.chunk(self._cid, model, self._created, [], True,
                                      protocol.usage(gen.prompt_tokens, total)))
        await self._end_events()

    def _finish_choice(self, event, model, usage_on):
        index, finish = event.index, event.finish_reason
        filt = self._filters[index]
        if filt is not None:
            rest, calls = filt.finish()
            if rest:
                self._send(protocol.chunk(self._cid, model, self._created,
                                          [protocol.delta(index, content=rest)], usage_on))
            if calls:
                finish = "tool_calls"
                deltas = [{"index": k, "id": protocol.tool_call_id(), "type": "function", "function": call}
                          for k, call in enumerate(calls)]
                self._send(protocol.chunk(self._cid, model, self._created,
                                          [protocol.delta(index, tool_calls=deltas)], usage_on))
        self._send(protocol.chunk(self._cid, model, self._created, [protocol.delta(index, finish)], usage_on))

    def _content_frame(self, index, model, usage_on):
        """(prefix, suffix) bytes around the JSON string of a content delta: the per-token chunk is one
        json.dumps of the text, not of the whole chunk (same bytes as protocol.chunk + protocol.delta)."""
        marker = "\x00TEXT\x00"
        frame = "data: " + json.dumps(protocol.chunk(self._cid, model, self._created,
                                                     [protocol.delta(index, content=marker)], usage_on),
                                      separators=(",", ":"), ensure_ascii=False) + "\n\n"
        prefix, suffix = frame.split(json.dumps(marker))
        return prefix.encode(), suffix.encode()

    def _cancel(self):
        gen = self._gen
        if gen is not None and not gen.finished and not gen.cancelled:
            gen.cancel()
            self.service.metrics.cancelled.inc()



class TranscriptionsHandler(AuthMixin, ChatBase):
    endpoint = "transcriptions"

    async def post(self):
        from foundry_inference.apps.chat import whisper

        service = self.service
        engine = self.engine_for("transcription")
        settings = service.settings
        if len(self.request.body) > settings.max_audio_bytes:
            raise ApiError(413, "invalid_request_error", f"The upload exceeds {settings.max_audio_bytes} bytes",
                           code="file_too_large", errors=[{"field": "file"}])
        if not self.request.headers.get("Content-Type", "").startswith("multipart/form-data"):
            raise protocol.invalid("Send the audio as multipart/form-data with a 'file' field", "file",
                                   "invalid_content_type")
        form = whisper.parse_form(self.request, engine)
        self.check_model(form.model)
        if service.audio_inflight >= 1 + settings.transcription_queue:
            service.metrics.rejected.labels(self.endpoint).inc()
            raise rate_limited(QueueFull(service.audio_inflight, settings.retry_after_s), "transcriptions")
        service.audio_inflight += 1
        loop = asyncio.get_running_loop()
        try:
            start = time.perf_counter()
            result = await loop.run_in_executor(service.audio_pool, whisper.run, engine, form)
        finally:
            service.audio_inflight -= 1
        service.metrics.audio_seconds.inc(result["duration"])
        log.debug("transcribed %.2f s of audio in %.3f s", result["duration"], time.perf_counter() - start)
        body, content_type = whisper.render(result, form.response_format)
        self.set_header("Content-Type", content_type)
        self.finish(body)


class ChatNotFound(AuthMixin, NotFoundHandler):
    """Unknown paths: authenticated like every other route (deny by default), then 404 in the OpenAI envelope."""
    envelope = staticmethod(openai_envelope)


routes = [
    (r"/v1/chat/completions", ChatCompletionsHandler),
    (r"/v1/audio/transcriptions", TranscriptionsHandler),
    (r"/v1/models", ModelsHandler),
    (r"/health", HealthHandler),
    (r"/healthz", HealthHandler),
    (r"/ready", ReadyHandler),
    (r"/readyz", ReadyHandler),
    (r"/metrics", MetricsHandler),
]
