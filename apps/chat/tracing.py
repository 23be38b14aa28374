"""Opt-in OpenTelemetry tracing of the chat server (FOUNDRY_TRACING=on; off by default).

The official Python SDK with its OTLP/HTTP exporter (the `tracing` extra: opentelemetry-sdk,
opentelemetry-exporter-otlp-proto-http), configured by the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME (default foundry-chat-server),
OTEL_RESOURCE_ATTRIBUTES. A W3C `traceparent` (and `tracestate`) on the request (nginx passes it through unchanged) is
the parent of the server's span, so the client's trace continues into the model server.

Per generation request, recorded when it ends (nothing on the engine thread, nothing per token): a SERVER span
`{operation} {model}` from the request's arrival to its end with `gen_ai.*` attributes (operation name, request and
response model, max_tokens, temperature, top_p, usage input/output tokens, finish reasons, time to first token), and
its children from the engine's own timestamps: `queue` (submitted until a batch slot took it), `prefill` (slot until
the first token) and `decode` (first token until the last). Spans leave in the SDK's background batch processor.
"""
import logging
import time

log = logging.getLogger("foundry_inference.chat")

SERVICE_NAME = "foundry-chat-server"


class TracingUnavailable(RuntimeError):
    pass


class Tracing:
    """`record(...)` is a no-op unless enabled."""

    def __init__(self, enabled=False, model=None):
        self.enabled = False
        self.provider = None
        if not enabled:
            return
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.propagate import extract  # noqa: F401 - checked here, used in record()
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise TracingUnavailable(f"FOUNDRY_TRACING=on needs the OpenTelemetry SDK ({exc.name} is missing): "
                                     "pip install 'foundry-inference[tracing]'") from None
        import os
        attributes = {"service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME}
        if model:
            attributes["foundry.model"] = model
        self.provider = TracerProvider(resource=Resource.create(attributes))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("foundry_inference.chat")
        self.enabled = True
        log.info("tracing on: OTLP/HTTP export (OTEL_EXPORTER_OTLP_* settings)")

    def record(self, operation, handler, request, gens, done_events, first_token_at):
        """Spans of one finished generation request. `request` is its GenerationRequest (or None), `gens` its
        Generations (perf_counter timestamps), `first_token_at` the handler's first token (perf_counter or None)."""
        if not self.enabled:
            return
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind, set_span_in_context

        offset = time.time_ns() - time.perf_counter_ns()

        def ns(perf):
            return int(perf * 1e9) + offset
        start_ns = int(handler.request._start_time * 1e9)
        end = time.perf_counter()
        model = handler.service.model_id
        parent = extract({k.lower(): v for k, v in handler.request.headers.items()
                          if k.lower() in ("traceparent", "tracestate")})
        attrs = {"gen_ai.operation.name": operation, "gen_ai.system": "foundry-local",
                 "gen_ai.request.model": model, "gen_ai.response.model": model,
                 "gen_ai.usage.input_tokens": sum(g.prompt_tokens for g in gens),
                 "gen_ai.usage.output_tokens": sum(e.completion_tokens for e in done_events),
                 "gen_ai.response.finish_reasons": [e.finish_reason for e in done_events],
                 "http.request.method": handler.request.method, "url.path": handler.request.path}
        if request is not None:
            attrs["gen_ai.request.max_tokens"] = request.max_new_tokens
            attrs["gen_ai.request.choice.count"] = request.n
            if request.sampling.do_sample:
                attrs["gen_ai.request.temperature"] = request.sampling.temperature
                attrs["gen_ai.request.top_p"] = request.sampling.top_p
        if first_token_at is not None:
            attrs["gen_ai.server.time_to_first_token"] = max(0.0, ns(first_token_at) - start_ns) / 1e9
        root = self.tracer.start_span(f"{operation} {model}", context=parent, kind=SpanKind.SERVER,
                                      start_time=start_ns, attributes=attrs)
        context = set_span_in_context(root)
        submitted = min((g.submitted_at for g in gens), default=None)
        admitted = min((g.admitted_at for g in gens if g.admitted_at is not None), default=None)
        engine_first = min((g.first_token_at for g in gens if g.first_token_at is not None), default=None)
        phases = [("queue", submitted, admitted), ("prefill", admitted, engine_first), ("decode", engine_first, end)]
        for name, begin, finish in phases:
            if begin is not None and finish is not None:
                child = self.tracer.start_span(name, context=context, start_time=ns(begin))
                child.end(end_time=max(ns(begin), ns(finish)))
        root.end(end_time=ns(end))

    def close(self):
        if self.provider is not None:
            self.provider.shutdown()
