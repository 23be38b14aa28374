"""Typed settings of the predictive server, read once from the environment as in a pod; a bad value stops the
server at start with a message naming the variable, never later on the first request.

Every variable is documented in docs/predictive-server.md.
"""
import os
from dataclasses import dataclass, replace

from foundry_inference.config import SettingsError
from foundry_inference.envreader import EnvReader

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "DmlExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {
    "cuda": "CUDAExecutionProvider", "gpu": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
    "directml": "DmlExecutionProvider", "dml": "DmlExecutionProvider", "cpu": "CPUExecutionProvider",
    "coreml": "CoreMLExecutionProvider", "openvino": "OpenVINOExecutionProvider", "rocm": "ROCMExecutionProvider",
}
HTTP_FRONTENDS = ("auto", "httptools", "tornado")


@dataclass(frozen=True)
class PredictiveSettings:
    model_path: str = None                 # an .onnx file, or a directory holding exactly one
    model_id: str = None                   # reported as metadata.model_id and /v1/model id; default: file stem
    model_type: str = None                 # reported as /v1/model type; default: guessed from the outputs
    host: str = "0.0.0.0"
    port: int = 8000
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    queue_depth: int = 100
    max_body_bytes: int = 50 * 1024 * 1024   # the ingress example allows 50m
    max_image_pixels: int = 40_000_000       # decompression-bomb guard (a 40 Mpx image decodes to 120 MB of RGB)
    intra_op_threads: int = 0                # 0: onnxruntime's default (one per core)
    inter_op_threads: int = 0
    providers: tuple = DEFAULT_PROVIDERS     # preference order; unavailable ones are skipped (graceful fallback)
    http_frontend: str = "auto"              # httptools when importable, else Tornado's own HTTP server
    workers: int = 1                         # processes sharing the port (SO_REUSEPORT), each with its own session
    keep_alive_timeout_s: float = 75.0
    inline_run_ms: float = 1.0               # batches whose observed run time is below this run on the loop thread
    intra_op_spinning: bool = False          # onnxruntime's busy-wait after a run steals the loop's CPU when off-core
    allow_non_finite: bool = False           # NaN/Infinity in float inputs (most converted models cannot take them)
    metrics_port: int = 0                    # 0: no separate metrics listener (/metrics stays on the API port)
    metrics_host: str = "0.0.0.0"

    @classmethod
    def from_env(cls, env=None, **overrides):
        """Read FOUNDRY_* variables from `env` (default os.environ); `overrides` win (tests, embedded mode)."""
        r = _Reader(os.environ if env is None else env)
        values = dict(
            model_path=r.text("FOUNDRY_MODEL_PATH") or r.text("MODEL_PATH"),
            model_id=r.text("FOUNDRY_MODEL_ID"),
            model_type=r.text("FOUNDRY_MODEL_TYPE"),
            host=r.text("FOUNDRY_PREDICTIVE_HOST") or cls.host,
            port=r.integer("FOUNDRY_PREDICTIVE_PORT", r.integer("PORT", cls.port, low=1, high=65535),
                           low=0, high=65535),
            max_batch_size=r.integer("FOUNDRY_MAX_BATCH_SIZE", cls.max_batch_size, low=1, high=4096),
            max_wait_ms=r.number("FOUNDRY_MAX_BATCH_WAIT_MS", cls.max_wait_ms, low=0.0, high=1000.0),
            queue_depth=r.integer("FOUNDRY_QUEUE_DEPTH", cls.queue_depth, low=1, high=1_000_000),
            max_body_bytes=r.integer("FOUNDRY_MAX_BODY_BYTES", cls.max_body_bytes, low=1024, high=1 << 31),
            max_image_pixels=r.integer("FOUNDRY_MAX_IMAGE_PIXELS", cls.max_image_pixels, low=1, high=1 << 34),
            intra_op_threads=r.integer("FOUNDRY_INTRA_OP_THREADS", 0, low=0, high=1024),
            inter_op_threads=r.integer("FOUNDRY_INTER_OP_THREADS", 0, low=0, high=1024),
            providers=r.providers("FOUNDRY_EXECUTION_PROVIDERS", DEFAULT_PROVIDERS),
            http_frontend=r.choice("FOUNDRY_HTTP_FRONTEND", HTTP_FRONTENDS, cls.http_frontend),
            workers=r.integer("FOUNDRY_PREDICTIVE_WORKERS", 1, low=1, high=256),
            keep_alive_timeout_s=r.number("FOUNDRY_KEEP_ALIVE_TIMEOUT_S", cls.keep_alive_timeout_s,
                                          low=1.0, high=86400.0),
            inline_run_ms=r.number("FOUNDRY_INLINE_RUN_MS", cls.inline_run_ms, low=0.0, high=1000.0),
            intra_op_spinning=r.flag("FOUNDRY_INTRA_OP_SPINNING", False),
            allow_non_finite=r.flag("FOUNDRY_ALLOW_NON_FINITE", False),
            metrics_port=r.integer("FOUNDRY_METRICS_PORT", 0, low=0, high=65535),
            metrics_host=r.text("FOUNDRY_METRICS_HOST") or cls.metrics_host,
        )
        values.update(overrides)
        return cls(**values).validated()

    def validated(self):
        if not self.model_path:
            raise SettingsError("FOUNDRY_MODEL_PATH is required: an .onnx file or a directory holding one")
        path = resolve_model_file(self.model_path)
        return replace(self, model_path=path)

    def with_overrides(self, **kw):
        return replace(self, **kw)


def resolve_model_file(path):
    """The .onnx file itself, or the single .onnx file inside a directory (searched one level deep, as the
    model store unpacks a BYO tarball into a folder)."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise SettingsError(f"FOUNDRY_MODEL_PATH: {path} does not exist")
    found = []
    for root, dirs, files in os.walk(path):
        depth = os.path.relpath(root, path).count(os.sep) + (0 if root == path else 1)
        if depth > 1:
            dirs[:] = []
            continue
        found += [os.path.join(root, f) for f in files if f.lower().endswith(".onnx")]
    if len(found) != 1:
        what = "no .onnx file" if not found else f"{len(found)} .onnx files ({', '.join(sorted(found))})"
        raise SettingsError(f"FOUNDRY_MODEL_PATH: {path} holds {what}; a predictive model is exactly one .onnx file")
    return found[0]


class _Reader(EnvReader):
    def __init__(self, env):
        super().__init__(env, SettingsError)

    def providers(self, name, default):
        raw = self.text(name)
        if raw is None:
            return default
        names = []
        for part in raw.split(","):
            part = part.strip()
            if part:
                names.append(PROVIDER_ALIASES.get(part.lower(), part))
        if not names:
            raise SettingsError(f"{name}: no execution provider named")
        if "CPUExecutionProvider" not in names:
            names.append("CPUExecutionProvider")   # the last resort is always there
        return tuple(names)
