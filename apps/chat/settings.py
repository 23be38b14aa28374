"""Typed settings of the chat server, read once from the environment as in a pod; a bad value stops the server at
start with a message naming the variable. Every variable is documented in docs/chat-server.md.

Names follow the predictive server's: FOUNDRY_MODEL_PATH / FOUNDRY_MODEL_ID (written by the operator), PORT (the
operator's; FOUNDRY_CHAT_PORT wins), FOUNDRY_CHAT_HOST (the operator sets 127.0.0.1 behind the nginx sidecar).
"""
import os
from dataclasses import dataclass, replace

from foundry_inference.config import SettingsError
from foundry_inference.envreader import EnvReader

__all__ = ["ChatSettings", "SettingsError"]


@dataclass(frozen=True)
class ChatSettings:
    model_path: str = None
    model_id: str = None                    # reported in /v1/models and every answer; default: the folder name
    host: str = "0.0.0.0"
    port: int = 5000
    max_batch: int = 4                      # sequences decoded together (one KV-cache slot each)
    queue_depth: int = 16                   # sequences waiting for a slot before 429
    retry_after_s: int = 1
    max_context: int = 0                    # 0: the model's context_length; lower it to bound KV-cache memory
    max_n: int = 4                          # largest `n` accepted (each choice takes a slot)
    prefill_chunk: int = 512                # prompts longer than this are prefilled in chunks of it
    prefill_threads: int = 0                # prefill workers beside the decoder (opt-in); -1: one if 2+ CPUs
    intra_op_threads: int = 0               # 0: every usable CPU but one (default_compute_threads)
    intra_op_spinning: bool = False         # busy-waiting threads halve throughput on a shared 2-core node
    max_body_bytes: int = 4 * 1024 * 1024   # chat requests
    max_audio_bytes: int = 25 * 1024 * 1024  # transcription uploads (OpenAI's limit)
    whisper_compute_type: str = "int8"
    whisper_beam_size: int = 5
    whisper_threads: int = 0                # 0: one per core
    transcription_queue: int = 4            # uploads waiting for the (single) transcription worker before 429
    strict_model: bool = False              # reject requests whose `model` is not this model's id (404)
    keep_alive_timeout_s: float = 75.0
    warmup: bool = True
    embedding_max_batch: int = 64           # inputs one embedding batch takes from the queue
    embedding_queue_depth: int = 4096       # embedding inputs queued or running before 429
    metrics_port: int = 0                   # 0: no separate metrics listener (/metrics stays on the API port)
    metrics_host: str = "0.0.0.0"
    tracing: bool = False                   # OpenTelemetry spans over OTLP/HTTP (apps/chat/tracing.py)

    @classmethod
    def from_env(cls, env=None, **overrides):
        r = EnvReader(os.environ if env is None else env, SettingsError)
        port = r.integer("PORT", cls.port, low=1, high=65535)
        values = dict(
            model_path=r.text("FOUNDRY_MODEL_PATH") or r.text("MODEL_PATH"),
            model_id=r.text("FOUNDRY_MODEL_ID"),
            host=r.text("FOUNDRY_CHAT_HOST") or cls.host,
            port=r.integer("FOUNDRY_CHAT_PORT", port, low=0, high=65535),
            max_batch=r.integer("FOUNDRY_CHAT_MAX_BATCH", cls.max_batch, low=1, high=64),
            queue_depth=r.integer("FOUNDRY_CHAT_QUEUE_DEPTH", cls.queue_depth, low=0, high=100_000),
            retry_after_s=r.integer("FOUNDRY_CHAT_RETRY_AFTER_S", cls.retry_after_s, low=1, high=3600),
            max_context=r.integer("FOUNDRY_CHAT_MAX_CONTEXT", 0, low=0, high=1 << 22),
            max_n=r.integer("FOUNDRY_CHAT_MAX_N", cls.max_n, low=1, high=64),
            prefill_chunk=r.integer("FOUNDRY_CHAT_PREFILL_CHUNK", cls.prefill_chunk, low=16, high=1 << 20),
            prefill_threads=r.integer("FOUNDRY_CHAT_PREFILL_THREADS", cls.prefill_threads, low=-1, high=16),
            intra_op_threads=r.integer("FOUNDRY_INTRA_OP_THREADS", 0, low=0, high=1024),
            intra_op_spinning=r.flag("FOUNDRY_INTRA_OP_SPINNING", False),
            max_body_bytes=r.integer("FOUNDRY_CHAT_MAX_BODY_BYTES", cls.max_body_bytes, low=1024, high=1 << 30),
            max_audio_bytes=r.integer("FOUNDRY_AUDIO_MAX_BYTES", cls.max_audio_bytes, low=1024, high=1 << 31),
            whisper_compute_type=r.text("FOUNDRY_WHISPER_COMPUTE_TYPE") or cls.whisper_compute_type,
            whisper_beam_size=r.integer("FOUNDRY_WHISPER_BEAM_SIZE", cls.whisper_beam_size, low=1, high=16),
            whisper_threads=r.integer("FOUNDRY_WHISPER_THREADS", 0, low=0, high=256),
            transcription_queue=r.integer("FOUNDRY_TRANSCRIPTION_QUEUE_DEPTH", cls.transcription_queue,
                                          low=0, high=10_000),
            strict_model=r.flag("FOUNDRY_CHAT_STRICT_MODEL", False),
            keep_alive_timeout_s=r.number("FOUNDRY_KEEP_ALIVE_TIMEOUT_S", cls.keep_alive_timeout_s,
                                          low=1.0, high=86400.0),
            warmup=r.flag("FOUNDRY_CHAT_WARMUP", True),
            embedding_max_batch=r.integer("FOUNDRY_EMBEDDING_MAX_BATCH", cls.embedding_max_batch, low=1, high=4096),
            embedding_queue_depth=r.integer("FOUNDRY_EMBEDDING_QUEUE_DEPTH", cls.embedding_queue_depth, low=1,
                                            high=10_000_000),
            metrics_port=r.integer("FOUNDRY_METRICS_PORT", 0, low=0, high=65535),
            metrics_host=r.text("FOUNDRY_METRICS_HOST") or cls.metrics_host,
            tracing=r.flag("FOUNDRY_TRACING", False),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validated()

    def validated(self):
        if not self.model_path:
            raise SettingsError("FOUNDRY_MODEL_PATH is required: a model folder (genai_config.json + .onnx + "
                                "tokenizer, or a CTranslate2 Whisper model)")
        if not os.path.isdir(self.model_path):
            raise SettingsError(f"FOUNDRY_MODEL_PATH: {self.model_path} is not a directory")
        if self.whisper_compute_type not in ("int8", "int8_float32", "float32", "default", "auto", "int16",
                                             "float16", "int8_float16", "bfloat16", "int8_bfloat16"):
            raise SettingsError(f"FOUNDRY_WHISPER_COMPUTE_TYPE: {self.whisper_compute_type!r} is not a "
                                f"CTranslate2 compute type")
        if self.tracing:
            import importlib.util
            if importlib.util.find_spec("opentelemetry.sdk") is None or \
                    importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
                raise SettingsError("FOUNDRY_TRACING=on needs the OpenTelemetry SDK and OTLP/HTTP exporter: "
                                    "pip install 'foundry-inference[tracing]'")
        model_id = self.model_id or os.path.basename(os.path.normpath(self.model_path))
        return replace(self, model_id=model_id)

    def with_overrides(self, **kw):
        return replace(self, **kw)


def usable_cpus():
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a pod's CPU limit)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = None
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:               # cgroup v2: "<quota> <period>" or "max <period>"
            q, period = f.read().split()[:2]
            if q != "max":
                quota = int(q) / int(period)
    except (OSError, ValueError):
        try:
            with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:   # cgroup v1
                q = int(f.read())
            with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                period = int(f.read())
            if q > 0:
                quota = q / period
        except (OSError, ValueError):
            pass
    if quota:
        import math
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def default_prefill_threads():
    """Prefill workers beside the decoder thread: one where a second CPU is usable (apps/chat/prefill.py)."""
    return 1 if usable_cpus() > 1 else 0


def default_compute_threads():
    """onnxruntime threads for the decoder: every usable CPU but one, which stays free for the HTTP event loop.

    Measured on 2 cores (docs/benchmarks.md): one decoder thread decodes as fast as two, and with two the event loop
    preempts a compute thread mid-step (the step waits for its slowest thread): single-stream throughput fell to
    ~80% of the raw loop with 2 threads, ~95% with 1."""
    return max(1, usable_cpus() - 1)
