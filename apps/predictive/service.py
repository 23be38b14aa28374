"""The predictive service: the model, the batcher and the metrics behind the handlers.

Handlers stay thin: they authenticate (mixin), hand the body to `decode`, `submit` the tensor and `render` the
slice of the batch outputs that belongs to them.
"""
import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from foundry_inference.apps.predictive import decoding, engine
from foundry_inference.apps.predictive.batcher import Batcher
from foundry_inference.apps.predictive.metrics import PredictiveMetrics

log = logging.getLogger("foundry_inference.predictive")

OFFLOAD_BYTES = 16 * 1024   # bodies from this size on are decoded in a worker thread (Pillow and numpy release the GIL)
_DECODE_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="foundry-decode")


class PredictiveService:
    def __init__(self, settings, metrics=None):
        self.settings = settings
        self.metrics = metrics or PredictiveMetrics()
        self.model = None
        self.batcher = None
        self.ready = False
        self.load_error = None
        self.inflight = 0           # /v1/predict handlers created and not finished (the idle fast path's signal)
        self._output_names = ()

    @property
    def model_id(self):
        return self.model.model_id if self.model is not None else self.settings.model_path

    # --- loading -----------------------------------------------------------------------------------------------

    def load(self):
        """Load, probe and warm up the model (blocking; run it off the event loop). Raises ModelLoadError."""
        started = time.perf_counter()
        try:
            model = engine.load_model(self.settings)
            run_s = engine.warm_up(model)
            full_batch_s = engine.time_run(model, self.settings.max_batch_size if model.batchable else 1)
        except Exception as exc:
            self.load_error = str(exc)
            raise
        self.model = model
        self._output_names = decoding.OutputKeys(o.name for o in model.outputs)
        self.batcher = Batcher(
            model, max_batch_size=self.settings.max_batch_size, max_wait_ms=self.settings.max_wait_ms,
            queue_depth=self.settings.queue_depth, metrics=self.metrics, run_estimate_s=full_batch_s,
            inline=full_batch_s * 1000.0 < self.settings.inline_run_ms)
        log.info("warm-up run %.3f ms; a full batch runs in %.3f ms %s", run_s * 1000.0,
                 full_batch_s * 1000.0, "on the event loop" if self.batcher.inline else "in a worker thread")
        self.metrics.bind_queue(self.batcher)
        self.metrics.bind_model(model.model_id)
        self.metrics.load_seconds.set(time.perf_counter() - started)
        self.metrics.ready.set(1)
        self.ready = True
        return self

    async def load_async(self):
        await asyncio.get_running_loop().run_in_executor(None, self.load)
        return self

    async def close(self):
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()

    # --- the request path --------------------------------------------------------------------------------------

    async def decode_async(self, body):
        """`decode`, off the event loop for bodies that take a while (images, large batches), so one big request
        does not stall the others; small bodies are decoded in place (a thread hop would cost more)."""
        if len(body) < OFFLOAD_BYTES:
            return self.decode(body)
        return await asyncio.get_running_loop().run_in_executor(_DECODE_POOL, self.decode, body)

    def decode(self, body):
        """The input tensor of a `/v1/predict` body; raises decoding.BadInput."""
        content_type, raw = decoding.parse_item(body)
        if content_type == decoding.JSON_TYPE:
            return decoding.tensor_from_json(raw, self.model, self.settings.allow_non_finite)
        return decoding.tensor_from_image(raw, content_type, self.model, self.settings.max_image_pixels)

    def submit(self, array, future=None):
        """Queue the tensor for the next batch (or run it at once when it is the only request in flight and the
        batcher is idle); raises batcher.QueueFull. `future`: see batcher.Pending."""
        if self.inflight == 1:
            pending = self.batcher.run_now(array, future)
            if pending is not None:
                return pending
        return self.batcher.submit(array, future)

    def render(self, outputs, start, stop, inference_ms):
        return decoding.response_body(self.model.model_id, self._output_names, outputs, start, stop, inference_ms)

    def describe(self):
        return self.model.describe(self.settings.max_batch_size)
