"""Prometheus metrics of the chat server, in a registry of its own (one per application).

Two families side by side: ours (`foundry_chat_*`) and the names vLLM's OpenAI server exports (`vllm:*`, checked
against vllm/v1/metrics/loggers.py: labels `model_name` and `engine`, the same histogram buckets), so dashboards and
autoscalers built for vLLM read this server unchanged. What ours count: `vllm:num_requests_running` /
`vllm:num_requests_waiting` count sequences (a request with `n` choices counts `n`), `vllm:request_success_total`
counts finished choices by `finished_reason` (stop, length, abort), `vllm:time_per_output_token_seconds` is one
observation per request: (last token - first token) / (tokens - 1) of its longest choice.
"""
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# vLLM's buckets (vllm/v1/metrics/loggers.py)
VLLM_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                     40.0, 80.0, 160.0, 640.0, 2560.0)
VLLM_TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                     40.0, 80.0)
VLLM_REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                        480.0, 960.0, 1920.0, 7680.0)
VLLM_FINISH = {"stop": "stop", "length": "length", "cancelled": "abort"}
ENGINE_INDEX = "0"


class VllmMetrics:
    """The vLLM-named series, their label children bound once to this server's model name."""

    def __init__(self, registry, model_name):
        labels = ["model_name", "engine"]
        values = (model_name, ENGINE_INDEX)

        def make(cls, name, doc, **kw):
            return cls(name, doc, labels, registry=registry, **kw).labels(*values)
        self.running = make(Gauge, "vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = make(Gauge, "vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.prompt_tokens = make(Counter, "vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = make(Counter, "vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          labels + ["finished_reason"], registry=registry)
        self.success = {ours: success.labels(*values, theirs) for ours, theirs in VLLM_FINISH.items()}
        self.ttft = make(Histogram, "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                         buckets=VLLM_TTFT_BUCKETS)
        self.tpot = make(Histogram, "vllm:time_per_output_token_seconds",
                         "Histogram of time per output token in seconds.", buckets=VLLM_TPOT_BUCKETS)
        self.e2e = make(Histogram, "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                        buckets=VLLM_REQUEST_BUCKETS)
        self.queue = make(Histogram, "vllm:request_queue_time_seconds",
                          "Histogram of time spent in WAITING phase for request.", buckets=VLLM_REQUEST_BUCKETS)


class ChatMetrics:
    def __init__(self, registry=None, model_name=""):
        self.registry = r = registry or CollectorRegistry()
        self.requests = Counter("foundry_chat_requests_total", "Requests answered, by endpoint and HTTP status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("foundry_chat_request_duration_seconds", "Time from arrival to the last byte",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("foundry_chat_time_to_first_token_seconds", "Time from arrival to the first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("foundry_chat_prompt_tokens_total", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter("foundry_chat_completion_tokens_total", "Tokens generated", registry=r)
        self.rejected = Counter("foundry_chat_rejected_total", "Requests refused with 429 (queue full)",
                                ["endpoint"], registry=r)
        self.cancelled = Counter("foundry_chat_cancelled_total", "Generations cancelled by a client disconnect",
                                 registry=r)
        self.running = Gauge("foundry_chat_running_sequences", "Sequences generating now", registry=r)
        self.waiting = Gauge("foundry_chat_waiting_sequences", "Sequences waiting for a slot", registry=r)
        self.audio_seconds = Counter("foundry_transcription_audio_seconds_total", "Seconds of audio transcribed",
                                     registry=r)
        self.load_seconds = Gauge("foundry_model_load_seconds", "Time to load and warm the model", registry=r)
        self.ready = Gauge("foundry_model_ready", "1 once the model is loaded", registry=r)
        self.vllm = VllmMetrics(r, model_name)

    def bind_engine(self, engine):
        self.running.set_function(lambda: engine.stats()["running"])
        self.waiting.set_function(lambda: engine.stats()["waiting"])
        self.vllm.running.set_function(lambda: engine.stats()["running"])
        self.vllm.waiting.set_function(lambda: engine.stats()["waiting"])

    def observe(self, endpoint, status, seconds):
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def prompt(self, tokens):
        self.prompt_tokens.inc(tokens)
        self.vllm.prompt_tokens.inc(tokens)

    def render(self):
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestTimer:
    """One generation request's clock: its first token (TTFT), then its end (e2e, time per output token, queue
    time, tokens and finish reasons). Times from `started` (the handler's arrival, perf_counter)."""

    def __init__(self, metrics, tracing=None, handler=None, operation="chat", request=None):
        self.metrics = metrics
        self.started = time.perf_counter()
        self.first = None
        self.tracing, self.handler, self.operation, self.request = tracing, handler, operation, request

    def token(self):
        if self.first is None:
            self.first = time.perf_counter()
            seconds = self.first - self.started
            self.metrics.ttft.observe(seconds)
            self.metrics.vllm.ttft.observe(seconds)

    def finished(self, gens, done_events):
        """`gens`: the request's Generations; `done_events`: every choice's DoneEvent."""
        now = time.perf_counter()
        m, v = self.metrics, self.metrics.vllm
        total = sum(e.completion_tokens for e in done_events)
        m.completion_tokens.inc(total)
        v.generation_tokens.inc(total)
        for event in done_events:
            child = v.success.get(event.finish_reason)
            if child is not None:
                child.inc()
        v.e2e.observe(now - self.started)
        longest = max((e.completion_tokens for e in done_events), default=0)
        if self.first is not None and longest > 1:
            v.tpot.observe((now - self.first) / (longest - 1))
        for gen in gens:
            if gen.admitted_at is not None:
                v.queue.observe(max(0.0, gen.admitted_at - gen.submitted_at))
        if self.tracing is not None and self.tracing.enabled:
            self.tracing.record(self.operation, self.handler, self.request, gens, done_events, self.first)
