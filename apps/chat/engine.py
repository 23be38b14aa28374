"""The one small interface between the HTTP layer and an inference engine, and the registry that picks the engine
from the model folder's contents.

A new engine (llama.cpp for GGUF, say) is one module with a class implementing `ChatEngine` or `TranscriptionEngine`
plus one line in `ENGINES`. The HTTP layer only ever sees these types:

    engine.render_prompt(messages, tools) -> str        the model's chat template
    engine.encode(text) -> list[int]                     prompt token ids (for exact usage counts and the context check)
    engine.submit(GenerationRequest) -> Generation       queued; raises QueueFull (429)
    async for event in generation: ...                   TextEvent / DoneEvent per choice, in generation order
    generation.cancel()                                  a disconnected client stops its generation at once
"""
import collections
import os
import time
from dataclasses import dataclass, field


class EngineError(Exception):
    """A failure inside the engine while generating (answered 500 / an SSE error event)."""


class QueueFull(Exception):
    def __init__(self, depth, retry_after):
        super().__init__(f"Too many requests in flight ({depth} queued or running); retry after {retry_after} s")
        self.depth = depth
        self.retry_after = retry_after


class UnsupportedModel(ValueError):
    """The model folder holds nothing this build can serve (raised at start-up)."""


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                      # 0: no top-k cut
    seed: int = None                    # None: a fresh random seed per choice
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple = ()              # ((token id, bias), ...)

    @property
    def needs_logits(self):
        """Whether choosing a token needs more than an argmax over the raw logits."""
        return (self.do_sample or bool(self.logit_bias) or self.presence_penalty != 0.0
                or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0)


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple = ()                    # stop strings: generation ends before them, they are never emitted
    guidance: tuple = None              # (kind, grammar): kind json_schema | regex | lark_grammar
    n: int = 1
    min_new_tokens: int = 0             # end-of-turn tokens are masked until this many were generated
    logprobs: int = None                # None: none; k >= 0: each token's logprob and its k best alternatives


@dataclass(frozen=True)
class TextEvent:
    index: int
    text: str
    logprobs: tuple = None              # logprobs.TokenLogprob of the tokens behind `text` (when requested)


@dataclass(frozen=True)
class DoneEvent:
    index: int
    finish_reason: str                  # "stop" | "length" | "cancelled" | "error"
    completion_tokens: int
    error: str = None


class Generation:
    """The HTTP side of one submitted request: an async iterator of events for its `n` choices. The engine thread
    delivers events through the event loop (`deliver`), never touching the buffer from its own thread.

    Events wait in a deque with at most one waiter future (the handler's): a delivered token resumes the handler
    once, and events already delivered are taken without suspending (an asyncio.Queue costs more per token)."""

    def __init__(self, request, loop, cancel):
        self.request = request
        self.prompt_tokens = len(request.prompt_ids)
        self.loop = loop
        self._events = collections.deque()
        self._waiter = None
        self._cancel = cancel
        self._open = request.n
        self.cancelled = False
        self.submitted_at = time.perf_counter()
        self.admitted_at = None             # set by the engine when the request leaves the queue (metrics)
        self.first_token_at = None

    def deliver(self, events):
        self._events.extend(events)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def pending(self):
        """Whether delivered events wait to be taken (the handler flushes when none do)."""
        return bool(self._events)

    def cancel(self):
        if not self.cancelled and self._open:
            self.cancelled = True
            self._cancel(self)

    @property
    def finished(self):
        return self._open == 0

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._open == 0:
            raise StopAsyncIteration
        events = self._events
        while not events:
            self._waiter = waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        event = events.popleft()
        if isinstance(event, DoneEvent):
            self._open -= 1
        return event


class ChatEngine:
    """A generative model. Implementations load in `load()` (blocking, run off the event loop)."""
    task = "chat"
    name = "abstract"
    supports_guidance = False           # response_format json / forced tool calls via constrained decoding
    supports_logit_bias = False
    context_length = 0                  # prompt + completion tokens one sequence may hold
    vocab_size = 0
    max_batch = 1

    def load(self):
        raise NotImplementedError

    def close(self):
        pass

    def render_prompt(self, messages, tools=None):
        raise NotImplementedError

    def encode(self, text):
        raise NotImplementedError

    def decode(self, ids):
        """Token ids -> text (a legacy completion's prompt given as token ids)."""
        raise NotImplementedError

    def submit(self, request, loop):
        raise NotImplementedError

    def stats(self):
        """{"running": choices generating, "waiting": choices queued} for metrics and Retry-After."""
        return {"running": 0, "waiting": 0}


class TranscriptionEngine:
    task = "transcription"
    name = "abstract"
    english_only = False

    def load(self):
        raise NotImplementedError

    def close(self):
        pass

    def transcribe(self, audio, *, language=None, prompt=None, temperature=0.0, timestamps=False):
        """`audio`: float32 mono 16 kHz samples. Returns {"text", "language", "duration", "segments": [...]}."""
        raise NotImplementedError


# --- the registry --------------------------------------------------------------------------------------------------

def _is_genai(folder, files):
    return "genai_config.json" in files


def _is_ctranslate2_whisper(folder, files):
    if "model.bin" not in files or "config.json" not in files:
        return False
    import json
    try:
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return False
    return "alignment_heads" in config or "suppress_ids" in config or "lang_ids" in config


def _is_embedding(folder, files):
    return "embedding_config.json" in files


def _genai(folder, settings):
    from foundry_inference.apps.chat.genai import GenaiChatEngine
    return GenaiChatEngine(folder, settings)


def _embedding(folder, settings):
    from foundry_inference.apps.chat.embeddings import EmbeddingEngine
    return EmbeddingEngine(folder, settings)


def _whisper(folder, settings):
    from foundry_inference.apps.chat.whisper import WhisperEngine
    return WhisperEngine(folder, settings)


# (name, probe(folder, files), factory(folder, settings)); first match wins
ENGINES = [
    ("onnxruntime-genai", _is_genai, _genai),
    ("faster-whisper", _is_ctranslate2_whisper, _whisper),
    ("onnxruntime-embeddings", _is_embedding, _embedding),
]


def find_model_folder(path):
    """The folder holding the model: `path` itself, or the single subfolder that holds one (the model store may
    unpack an artifact one level down)."""
    if not os.path.isdir(path):
        raise UnsupportedModel(f"FOUNDRY_MODEL_PATH: {path} is not a directory")
    if _probe(path):
        return path
    found = [os.path.join(path, d) for d in sorted(os.listdir(path))
             if os.path.isdir(os.path.join(path, d)) and _probe(os.path.join(path, d))]
    if len(found) == 1:
        return found[0]
    files = sorted(os.listdir(path))
    hint = ""
    if any(f.lower().endswith(".gguf") for f in files):
        hint = " (GGUF models need a llama.cpp engine, which this build does not include)"
    raise UnsupportedModel(f"FOUNDRY_MODEL_PATH: {path} holds no model this server can serve{hint}: expected "
                           f"genai_config.json (onnxruntime-genai), a CTranslate2 Whisper model or "
                           f"embedding_config.json (an ONNX embedding model); found "
                           f"{', '.join(files[:12]) or 'nothing'}")


def _probe(folder):
    files = set(os.listdir(folder))
    return any(probe(folder, files) for _, probe, _ in ENGINES)


def open_engine(path, settings):
    folder = find_model_folder(path)
    files = set(os.listdir(folder))
    for _name, probe, factory in ENGINES:
        if probe(folder, files):
            return factory(folder, settings)
    raise UnsupportedModel(f"no engine for {folder}")   # pragma: no cover - find_model_folder checked
