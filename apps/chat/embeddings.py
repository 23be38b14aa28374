"""Sentence-embedding models (an ONNX encoder + tokenizer.json + embedding_config.json), served with a batcher.

The folder (scripts/build_embedding_model.py writes one for all-MiniLM-L6-v2):

- `model.onnx`: inputs `input_ids`, `attention_mask` (and `token_type_ids` when the graph has it), int64
  [batch, sequence]; output `last_hidden_state` float [batch, sequence, hidden];
- `tokenizer.json`: a Hugging Face `tokenizers` file whose post-processor adds the special tokens;
- `embedding_config.json`: {"dimensions", "pooling": "mean" | "cls", "normalize", "max_tokens",
  "matryoshka_dimensions": [smaller sizes the model was trained to be cut to]}.

Batching: requests queue their inputs (each a list of token ids); one engine thread takes up to `max_batch` of them
at a time, sorts them by length and runs them in padded groups of similar length (many short inputs per
`session.run`), pools each row over its own tokens only (padding never changes a row: attention and pooling are
masked) and hands each request its matrix on its event loop once its last input is done. The queue is bounded in
inputs: beyond it `submit` raises QueueFull (429 + Retry-After).
"""
import collections
import json
import logging
import os
import threading
import time

import numpy as np

from foundry_inference.apps.chat.engine import QueueFull

log = logging.getLogger("foundry_inference.chat")

CONFIG = "embedding_config.json"
BATCH_TOKENS = 16384        # padded tokens per session.run: short inputs go many to a run, long ones fewer


class EmbeddingConfig:
    def __init__(self, folder):
        with open(os.path.join(folder, CONFIG)) as f:
            raw = json.load(f)
        self.dimensions = int(raw["dimensions"])
        self.pooling = raw.get("pooling", "mean")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"{CONFIG}: pooling must be mean or cls, got {self.pooling!r}")
        self.normalize = bool(raw.get("normalize", True))
        self.max_tokens = int(raw.get("max_tokens", 512))
        self.matryoshka = tuple(int(d) for d in raw.get("matryoshka_dimensions") or ())
        self.output = raw.get("output", "last_hidden_state")
        models = [f for f in sorted(os.listdir(folder)) if f.endswith(".onnx")]
        if len(models) != 1:
            raise ValueError(f"{folder}: an embedding model folder holds exactly one .onnx file, found {models}")
        self.filename = os.path.join(folder, models[0])


class _Job:
    __slots__ = ("sequences", "result", "left", "future", "loop", "submitted_at", "admitted_at")

    def __init__(self, sequences, dimensions, loop):
        self.sequences = sequences
        self.result = np.empty((len(sequences), dimensions), dtype=np.float32)
        self.left = len(sequences)
        self.loop = loop
        self.future = loop.create_future()
        self.submitted_at = time.perf_counter()
        self.admitted_at = None


class EmbeddingEngine:
    task = "embeddings"
    name = "onnxruntime-embeddings"

    def __init__(self, folder, settings):
        self.folder = folder
        self.settings = settings
        self.max_batch = settings.embedding_max_batch
        self.capacity = settings.embedding_queue_depth
        self._pending = collections.deque()       # (job, index) not yet run
        self._queued = 0                          # inputs submitted and not finished (all threads, under the lock)
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = None
        self.runs = 0                             # session.run calls (metrics, tests)
        self.rows = 0                             # inputs run

    # --- loading -------------------------------------------------------------------------------------------------

    def load(self):
        import onnxruntime as ort
        import tokenizers

        from foundry_inference.apps.chat.settings import default_compute_threads
        start = time.perf_counter()
        self.config = cfg = EmbeddingConfig(self.folder)
        self.dimensions = cfg.dimensions
        self.context_length = cfg.max_tokens
        self.tokenizer = tokenizers.Tokenizer.from_file(os.path.join(self.folder, "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.settings.intra_op_threads or default_compute_threads()
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.settings.intra_op_spinning else "0")
        self.session = ort.InferenceSession(cfg.filename, so, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._thread = threading.Thread(target=self._run, name="embedding-engine", daemon=True)
        self._thread.start()
        self._embed([self.tokenizer.encode("warm up").ids])
        log.info("embedding model %s loaded in %.2f s (%d dimensions, at most %d tokens per input)", self.folder,
                 time.perf_counter() - start, cfg.dimensions, cfg.max_tokens)

    def close(self):
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(10)

    # --- the event-loop side -------------------------------------------------------------------------------------

    def encode_batch(self, texts):
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def submit(self, sequences, loop):
        """Queue `sequences` (lists of token ids); returns a future of their [n, dimensions] float32 matrix."""
        job = _Job(sequences, self.dimensions, loop)
        with self._lock:
            if self._queued + len(sequences) > self.capacity:
                raise QueueFull(self._queued, self.settings.retry_after_s)
            self._queued += len(sequences)
            self._pending.extend((job, i) for i in range(len(sequences)))
            self._lock.notify()
        return job

    def stats(self):
        return {"running": 0, "waiting": self._queued}

    # --- the engine thread ---------------------------------------------------------------------------------------

    def _run(self):
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    for job, _i in self._pending:
                        job.loop.call_soon_threadsafe(_cancel, job.future)
                    self._pending.clear()
                    return
                take = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            now = time.perf_counter()
            for job, _i in take:
                job.admitted_at = job.admitted_at or now
            try:
                vectors = self._embed([job.sequences[i] for job, i in take])
                error = None
            except Exception as exc:  # noqa: BLE001 - the requests in this batch fail, the engine goes on
                log.exception("embedding batch failed")
                vectors, error = None, exc
            done = []
            with self._lock:
                self._queued -= len(take)
            for k, (job, i) in enumerate(take):
                if error is None:
                    job.result[i] = vectors[k]
                job.left -= 1
                if error is not None and not job.future.done():
                    job.loop.call_soon_threadsafe(_fail, job.future, error)
                elif job.left == 0:
                    done.append(job)
            for job in done:
                job.loop.call_soon_threadsafe(_resolve, job.future, job.result)

    def _embed(self, sequences):
        """[len(sequences), dimensions] float32: padded groups of similar length, pooled and normalised."""
        order = sorted(range(len(sequences)), key=lambda k: len(sequences[k]))
        out = np.empty((len(sequences), self.dimensions), dtype=np.float32)
        groups, current = [], []
        for k in order:                     # ascending length: the newest member sets the group's width
            if current and (len(current) + 1) * len(sequences[k]) > BATCH_TOKENS:
                groups.append(current)
                current = []
            current.append(k)
        groups.append(current)
        for chunk in groups:
            width = max(len(sequences[k]) for k in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, k in enumerate(chunk):
                seq = sequences[k]
                ids[row, :len(seq)] = seq
                mask[row, :len(seq)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run([self.config.output], feeds)[0].astype(np.float32, copy=False)
            self.runs += 1
            self.rows += len(chunk)
            out[chunk] = self._pool(hidden, mask)
        return out

    def _pool(self, hidden, mask):
        if self.config.pooling == "cls":
            vectors = hidden[:, 0, :]
        else:
            weights = mask[..., None].astype(np.float32)
            vectors = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self.config.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors


def _resolve(future, value):
    if not future.done():
        future.set_result(value)


def _fail(future, error):
    if not future.done():
        future.set_exception(error)


def _cancel(future):
    if not future.done():
        future.cancel()
