"""Prometheus metrics of the chat server, in a registry of its own (one per application)."""
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ChatMetrics:
    def __init__(self, registry=None):
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

    def bind_engine(self, engine):
        self.running.set_function(lambda: engine.stats()["running"])
        self.waiting.set_function(lambda: engine.stats()["waiting"])

    def observe(self, endpoint, status, seconds):
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self):
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
