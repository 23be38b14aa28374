"""The ONNX model: one onnxruntime session, its tensor metadata, provider fallback and the batching probe.

Everything a request needs to know about the model (dtype, fixed dimensions, layout of an image input) is computed once
here, so the per-request path only does table look-ups.
"""
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("foundry_inference.predictive")

# ONNX Runtime type strings -> numpy dtypes for the input tensor types the contract supports.
INPUT_DTYPES = {
    "tensor(float16)": np.dtype(np.float16),
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
}
DTYPE_NAMES = {"tensor(float16)": "float16", "tensor(float)": "float32", "tensor(double)": "float64",
               "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(uint8)": "uint8"}


class ModelLoadError(RuntimeError):
    """The model cannot be served (missing file, no single input, unsupported input type, no usable provider)."""


@dataclass
class TensorInfo:
    name: str
    type: str
    shape: list            # ints for fixed dimensions, a string (symbolic) or None for dynamic ones

    def as_json(self):
        return {"name": self.name, "shape": list(self.shape), "type": self.type}


@dataclass
class ImageLayout:
    """How an image maps onto a 4-D input: channels-first or last, and the target size (None: the image's own)."""
    channels_first: bool
    height: int = None
    width: int = None


@dataclass
class Model:
    session: object
    path: str
    model_id: str
    model_type: str
    input: TensorInfo
    outputs: list
    dtype: np.dtype
    providers: list                          # the session's active providers, best first
    requested_providers: list
    fallback: list = field(default_factory=list)   # human-readable notes on skipped providers
    load_time_s: float = 0.0
    batchable: bool = False                  # dimension 0 is dynamic on the input and on every output
    image_layout: ImageLayout = None         # None: the input is not an image tensor
    fixed_dims: tuple = ()                   # (axis, size) for fixed dimensions after the batch axis
    fixed_batch: int = None                  # the batch dimension's size when it is fixed

    @property
    def input_name(self):
        return self.input.name

    @property
    def rank(self):
        return len(self.input.shape)

    def run(self, array):
        """One session.run on a batch; returns the outputs in the model's order."""
        return self.session.run(None, {self.input.name: array})

    def describe(self, max_batch_size):
        """The /v1/model document (contract fields plus docs/api.md decision 8's input_name/input_type)."""
        return {
            "id": self.model_id,
            "name": self.model_id,
            "type": self.model_type,
            "status": "loaded",
            "input_name": self.input.name,
            "input_type": self.input.type,
            "input_shape": list(self.input.shape),
            "outputs": [o.as_json() for o in self.outputs],
            "batch_size": max_batch_size,
            "dynamic_batching": self.batchable,
            "execution_provider": self.providers[0],
            "execution_providers": list(self.providers),
            "requested_providers": list(self.requested_providers),
            "provider_fallback": list(self.fallback),
            "load_time_s": round(self.load_time_s, 4),
        }


def _dynamic(dim):
    return not isinstance(dim, int) or dim <= 0


def _guess_type(outputs):
    names = " ".join(o.name.lower() for o in outputs)
    if any(o.type.startswith("seq(map") or o.type == "tensor(string)" for o in outputs) or \
            any(word in names for word in ("label", "prob", "softmax", "class", "logit")):
        return "classification"
    if len(outputs) == 1 and outputs[0].type in ("tensor(float)", "tensor(double)", "tensor(float16)"):
        shape = outputs[0].shape
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            return "regression"
    return "prediction"


def image_layout_for(shape):
    """Channels-first [N,3,H,W] or channels-last [N,H,W,3]; None when the input cannot take an RGB image."""
    if len(shape) != 4:
        return None
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if fixed[1] == 3:
        return ImageLayout(True, fixed[2], fixed[3])
    if fixed[3] == 3:
        return ImageLayout(False, fixed[1], fixed[2])
    return None


def session_options(settings):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if settings.intra_op_threads:
        opts.intra_op_num_threads = settings.intra_op_threads
    if settings.inter_op_threads:
        opts.inter_op_num_threads = settings.inter_op_threads
    opts.log_severity_level = 3
    if not settings.intra_op_spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def create_session(path, settings):
    """Try the configured providers in order of preference and fall back gracefully: a provider that this
    onnxruntime build lacks is skipped, and one that fails to initialise (no GPU, driver missing) is dropped with a
    note, down to the CPU provider. Returns (session, notes)."""
    import onnxruntime as ort
    available = set(ort.get_available_providers())
    notes, wanted = [], []
    for name in settings.providers:
        if name in available:
            wanted.append(name)
        else:
            notes.append(f"{name}: not available in this onnxruntime build")
    if "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    opts = session_options(settings)
    while wanted:
        try:
            session = ort.InferenceSession(path, sess_options=opts, providers=wanted)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped failures
            if len(wanted) == 1:
                raise ModelLoadError(f"cannot load {path}: {exc}") from exc
            notes.append(f"{wanted[0]}: failed to initialise ({str(exc).splitlines()[0][:200]})")
            wanted = wanted[1:]
            continue
        active = session.get_providers()
        for name in wanted:
            if name not in active:
                notes.append(f"{name}: requested but not used by the session (fell back)")
        return session, notes
    raise ModelLoadError("no execution provider left")  # pragma: no cover - CPU is always appended


def load_model(settings):
    """Load, inspect and probe the model. Raises ModelLoadError with a message fit for the pod's log."""
    path = settings.model_path
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file {path} does not exist")
    started = time.perf_counter()
    session, notes = create_session(path, settings)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(f"a predictive model has exactly one input tensor; {path} has {len(inputs)}: "
                             f"{', '.join(i.name for i in inputs)}")
    inp = TensorInfo(inputs[0].name, inputs[0].type, list(inputs[0].shape))
    if inp.type not in INPUT_DTYPES:
        raise ModelLoadError(f"input {inp.name} has type {inp.type}; supported: {', '.join(DTYPE_NAMES.values())}")
    if not inp.shape:
        raise ModelLoadError(f"input {inp.name} is a scalar; a predictive input has at least one dimension")
    outputs = [TensorInfo(o.name, o.type, list(o.shape) if o.shape is not None else []) for o in session.get_outputs()]
    model_id = settings.model_id or os.path.splitext(os.path.basename(path))[0]
    model = Model(
        session=session, path=path, model_id=model_id,
        model_type=settings.model_type or _guess_type(outputs),
        input=inp, outputs=outputs, dtype=INPUT_DTYPES[inp.type],
        providers=session.get_providers(), requested_providers=list(settings.providers), fallback=notes,
        image_layout=image_layout_for(inp.shape),
        fixed_dims=tuple((axis, d) for axis, d in enumerate(inp.shape) if axis > 0 and not _dynamic(d)),
        fixed_batch=None if _dynamic(inp.shape[0]) else inp.shape[0],
    )
    model.batchable = probe_batching(model)
    model.load_time_s = time.perf_counter() - started
    for note in notes:
        log.warning("execution provider fallback: %s", note)
    log.info("loaded %s (%s) in %.3fs on %s; dynamic batching %s", model_id, inp.type, model.load_time_s,
             model.providers[0], "on" if model.batchable else "off")
    return model


def sample_input(model, rows=1):
    """A zero tensor that fits the input (dynamic dimensions -> 1, or 224 for the spatial axes of an image)."""
    shape = []
    layout = model.image_layout
    for axis, dim in enumerate(model.input.shape):
        if axis == 0:
            shape.append(rows if model.fixed_batch is None else model.fixed_batch)
        elif not _dynamic(dim):
            shape.append(dim)
        elif layout is not None and ((layout.channels_first and axis in (2, 3)) or
                                     (not layout.channels_first and axis in (1, 2))):
            shape.append(224)
        else:
            shape.append(1)
    return np.zeros(shape, dtype=model.dtype)


def output_rows(value):
    """The length of an output's first axis (numpy array or a sequence output such as skl2onnx's ZipMap)."""
    if isinstance(value, np.ndarray):
        return value.shape[0] if value.ndim else None
    if isinstance(value, list):
        return len(value)
    return None


def probe_batching(model):
    """Batching is safe when dimension 0 is dynamic on the input and every output follows it: checked by running
    1 and 3 rows rather than trusting the declared output shapes, which converters often leave unset."""
    if model.fixed_batch is not None:
        return False
    try:
        for rows in (1, 3):
            outs = model.run(sample_input(model, rows))
            if any(output_rows(o) != rows for o in outs):
                log.info("outputs do not follow the batch dimension; serving one request per run")
                return False
    except Exception as exc:  # noqa: BLE001
        log.info("batch probe failed (%s); serving one request per run", exc)
        return False
    return True


def warm_up(model):
    """One inference that must succeed before /ready says yes; returns its duration in seconds."""
    started = time.perf_counter()
    model.run(sample_input(model, 1))
    return time.perf_counter() - started


def time_run(model, rows, repeat=3):
    """Best-of-`repeat` seconds for one run of `rows` rows (the batcher's inline-or-thread decision)."""
    sample = sample_input(model, rows)
    best = None
    for _ in range(repeat):
        started = time.perf_counter()
        model.run(sample)
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    return best
