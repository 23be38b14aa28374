"""The chat server's state behind the handlers: settings, the engine chosen from the model folder, its load status,
metrics and the transcription worker."""
import asyncio
import concurrent.futures
import logging
import time

from foundry_inference.apps.chat.engine import open_engine
from foundry_inference.apps.chat.metrics import ChatMetrics
from foundry_inference.apps.chat.tracing import Tracing

log = logging.getLogger("foundry_inference.chat")


class ChatService:
    def __init__(self, settings, engine=None):
        self.settings = settings
        self.engine = engine
        self.metrics = ChatMetrics(model_name=settings.model_id)
        self.tracing = Tracing(settings.tracing, settings.model_id)
        self.load_error = None
        self.ready = False
        self.created = int(time.time())
        # One transcription at a time: CTranslate2 already uses every core for one; more would only interleave.
        self.audio_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="transcribe")
        self.audio_inflight = 0

    @property
    def model_id(self):
        return self.settings.model_id

    def load(self):
        start = time.perf_counter()
        try:
            if self.engine is None:
                self.engine = open_engine(self.settings.model_path, self.settings)
            self.engine.load()
        except Exception as exc:
            self.load_error = str(exc) or type(exc).__name__
            raise
        if self.engine.task in ("chat", "embeddings"):
            self.metrics.bind_engine(self.engine)
        self.metrics.load_seconds.set(time.perf_counter() - start)
        self.metrics.ready.set(1)
        self.ready = True

    async def load_async(self):
        await asyncio.get_running_loop().run_in_executor(None, self.load)

    async def close(self):
        if self.engine is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.close)
        self.audio_pool.shutdown(wait=False)
        self.tracing.close()
