"""Prefill beside decoding, for the onnxruntime-genai engine (apps/chat/genai.py).

A prompt's prefill takes as long as tens of decode steps. Run on the engine thread, it stops every running stream
for that long, and requests arriving together are prefilled one after another: on 2 cores the 4th of 4 simultaneous
requests got its first token after 4 prefills. A `PrefillWorker` is a thread of its own that runs a new request's
prompt through the same onnxruntime session (`Run` is thread-safe; with the decoder's intra-op threads each run
computes on its calling thread, so the worker uses a core the decode step does not) into a small KV buffer of its own
(staging, `[1, kv_heads, capacity, head_size]` per layer). The engine thread keeps decoding meanwhile; when the worker
is done, the engine copies the prompt's KV prefix into the batch's next row and the request joins the batch like one
it prefilled itself. The computation is the one the engine thread would do (batch of one, the same chunks and
mask), so every output stays identical.

The engine hands a worker one job at a time and takes it back (`hand_over`) before the next, so the staging buffer
is never written while it is copied. Prompts longer than the staging capacity are prefilled by the engine thread.
"""
import logging
import queue
import threading

import numpy as np

log = logging.getLogger("foundry_inference.chat")


class PrefillJob:
    """One request's prompt on its way through a worker."""
    __slots__ = ("gen", "choices", "prompt", "worker", "logits", "error")

    def __init__(self, gen, choices, prompt, worker):
        self.gen, self.choices, self.prompt, self.worker = gen, choices, prompt, worker
        self.logits = None          # the last position's logits (float32) once done
        self.error = None


class PrefillWorker:
    def __init__(self, engine, index, capacity):
        from onnxruntime import OrtValue

        cfg = engine.config
        self.engine = engine
        self.capacity = capacity
        shape = (1, cfg.kv_heads, capacity, cfg.head_size)
        self.keys = [np.zeros(shape, engine.kv_dtype) for _ in range(cfg.layers)]
        self.values = [np.zeros(shape, engine.kv_dtype) for _ in range(cfg.layers)]
        for buf in self.keys + self.values:
            buf.fill(0)             # resident now rather than during the first prefill
        self._kv = ([OrtValue.ortvalue_from_numpy(k) for k in self.keys],
                    [OrtValue.ortvalue_from_numpy(v) for v in self.values])
        self.job = None             # the job handed out and not yet taken back (engine thread only)
        self.jobs = 0               # prompts prefilled (tests, logs)
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"chat-prefill-{index}", daemon=True)
        self._thread.start()

    @property
    def nbytes(self):
        return sum(b.nbytes for b in self.keys + self.values)

    def fits(self, prompt_length):
        return prompt_length <= self.capacity

    # --- engine thread -----------------------------------------------------------------------------------------------

    def start(self, gen, choices, prompt):
        self.job = PrefillJob(gen, choices, prompt, self)
        self._jobs.put(self.job)

    def hand_over(self, rows, length):
        """Copy the finished prompt's KV (its first `length` positions) into each of `rows` of the engine's buffers;
        the worker is free again."""
        engine = self.engine
        for mine, theirs in zip(self.keys + self.values, engine.keys + engine.values, strict=True):
            for row in rows:
                theirs[row, :, :length] = mine[0, :, :length]
        self.job = None

    def stop(self):
        self._jobs.put(None)

    # --- worker thread -----------------------------------------------------------------------------------------------

    def _bind(self, binding):
        self.engine.config.bind_kv(binding, *self._kv)

    def _run(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job.logits = self.engine.run_prompt(job.prompt, self._bind)
            except Exception as exc:  # noqa: BLE001 - this request fails (the engine says so), the worker goes on
                log.exception("prefill failed")
                job.error = exc
            self.jobs += 1
            self.engine.post(("prefilled", job))
