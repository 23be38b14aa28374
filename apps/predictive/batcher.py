"""Dynamic batching: concurrent requests are coalesced into one session.run and the outputs split back by rows.

One runner coroutine owns the session. Requests wait in a bounded FIFO; the runner takes the head and every queued
request whose row shape matches it, up to `max_batch_size` rows, concatenates them along axis 0, runs once, and hands
each request its own [start, stop) slice, so rows can never be mixed up between requests: the slices are computed
from the same list that built the batch.

Batches form by themselves while a run is in progress; on top of that the runner lingers for more arrivals only
while each event-loop turn keeps bringing new requests, and never beyond `max_wait_ms`, so a lone client does not pay
the wait. Small models run on the event-loop thread (a hop to a worker thread costs more than the run itself); slow
ones run in a dedicated thread. The choice is made once, at load, from the timing of a full batch: timings taken
later in the worker thread include waits for the GIL and would flip the choice for the wrong reason.
"""
import asyncio
import collections
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

log = logging.getLogger("foundry_inference.predictive")


class QueueFull(Exception):
    def __init__(self, depth, retry_after):
        super().__init__(f"Queue full: {depth} requests are waiting; retry after {retry_after} s")
        self.depth = depth
        self.retry_after = retry_after


class InferenceFailed(RuntimeError):
    """session.run raised: every request of that batch gets a 500, the server goes on."""


class Pending:
    """One accepted request: its tensor and the future its handler awaits (an asyncio Future, or any object with
    done(), set_result() and set_exception() that the submitter passes in, resolved on the event-loop thread)."""
    __slots__ = ("array", "rows", "key", "future")

    def __init__(self, array, future):
        self.array = array
        self.rows = array.shape[0]
        self.key = array.shape[1:]
        self.future = future


class DrainRate:
    """Requests completed per second over a sliding window, for an honest Retry-After."""

    def __init__(self, window_s=5.0):
        self.window_s = window_s
        self.events = collections.deque()   # (monotonic time, completed count)
        self.total = 0

    def record(self, count, now=None):
        now = time.monotonic() if now is None else now
        self.events.append((now, count))
        self.total += count
        cutoff = now - self.window_s
        while self.events and self.events[0][0] < cutoff:
            self.total -= self.events.popleft()[1]

    def per_second(self, now=None):
        now = time.monotonic() if now is None else now
        cutoff = now - self.window_s
        while self.events and self.events[0][0] < cutoff:
            self.total -= self.events.popleft()[1]
        if not self.events:
            return None
        span = max(now - self.events[0][0], 0.05)
        return self.total / span


class Batcher:
    def __init__(self, model, *, max_batch_size=32, max_wait_ms=2.0, queue_depth=100, inline=False,
                 metrics=None, run_estimate_s=None):
        self.model = model
        self.max_rows = max_batch_size if model.batchable else 1
        self.max_wait_s = max_wait_ms / 1000.0
        self.depth = queue_depth
        self.inline = inline                   # run on the loop thread (decided at load from a full-batch timing)
        self.metrics = metrics
        self.queue = collections.deque()
        self.drain = DrainRate()
        self.run_ewma_s = run_estimate_s      # seconds per batch, smoothed
        self.last_batch_requests = 0
        self.batches = 0
        self.running = 0                       # requests inside the current session.run
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="foundry-onnx")
        self._wakeup = None
        self._task = None
        self._loop = None

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self):
        """Start the runner on the running loop (done by the first submit when nobody called it)."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._task = self._loop.create_task(self._run_forever())
        return self

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        while self.queue:
            pending = self.queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(InferenceFailed("the server is shutting down"))
        self._executor.shutdown(wait=False)

    # --- admission ---------------------------------------------------------------------------------------------

    def submit(self, array, future=None):
        """Queue one request's tensor; raises QueueFull when `queue_depth` requests are already waiting. `future`:
        what to resolve with the outputs (default: a new asyncio Future)."""
        if self._task is None:
            self.start()
        if len(self.queue) >= self.depth:
            self._purge_cancelled()
            if len(self.queue) >= self.depth:
                raise QueueFull(self.depth, self.retry_after())
        pending = Pending(array, self._loop.create_future() if future is None else future)
        self.queue.append(pending)
        if not self._wakeup.is_set():
            self._wakeup.set()
        return pending

    def retry_after(self, now=None):
        """Seconds until the current queue should have drained, from the observed completion rate (at least 1)."""
        backlog = len(self.queue) + self.running
        rate = self.drain.per_second(now)
        if rate is None or rate <= 0:
            per_batch = self.run_ewma_s or 0.01
            rate = self.max_rows / per_batch
        return int(min(max(math.ceil(backlog / rate), 1), 3600))

    def _purge_cancelled(self):
        if any(p.future.done() for p in self.queue):
            kept = [p for p in self.queue if not p.future.done()]
            dropped = len(self.queue) - len(kept)
            self.queue = collections.deque(kept)
            if self.metrics is not None and dropped:
                self.metrics.dropped.inc(dropped)

    # --- the runner --------------------------------------------------------------------------------------------

    async def _run_forever(self):
        while True:
            if not self.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = []
            try:
                if self.max_rows > 1 and self.last_batch_requests > 1 and self.max_wait_s > 0:
                    await self._linger()
                batch = self._take()
                if batch:
                    await self._run(batch)
            except Exception as exc:  # noqa: BLE001 - the runner must outlive any bug, or every later request hangs
                self._fail(batch, exc)

    async def _linger(self):
        """Wait for more requests while each loop turn keeps bringing some, within max_wait and max rows."""
        deadline = time.monotonic() + self.max_wait_s
        seen = len(self.queue)
        while seen and self._queued_rows() < self.max_rows and time.monotonic() < deadline:
            await asyncio.sleep(0)
            if len(self.queue) == seen:
                return
            seen = len(self.queue)

    def _queued_rows(self):
        return sum(p.rows for p in self.queue)

    def _take(self):
        """The head request plus every queued request with the same row shape, up to max_rows rows, in order.

        Requests whose client went away (future cancelled) are dropped here, before they cost a run."""
        queue = self.queue
        batch, rows, key, dropped = [], 0, None, 0
        skipped = collections.deque()
        while queue:
            pending = queue.popleft()
            if pending.future.done():
                dropped += 1
                continue
            if key is None:
                key, rows = pending.key, pending.rows
                batch.append(pending)
                if rows >= self.max_rows:
                    break
                continue
            if pending.key != key or rows + pending.rows > self.max_rows:
                skipped.append(pending)
                if rows + 1 > self.max_rows:
                    break
                continue
            batch.append(pending)
            rows += pending.rows
            if rows >= self.max_rows:
                break
        if skipped:
            skipped.extend(queue)
            self.queue = queue = skipped
        if dropped and self.metrics is not None:
            self.metrics.dropped.inc(dropped)
        return batch

    async def _run(self, batch):
        if self.inline:
            self._run_inline(batch)
            return
        array = self._concatenate(batch)
        self.running = len(batch)
        try:
            outputs, seconds = await self._loop.run_in_executor(self._executor, self._timed_run, array)
        except Exception as exc:  # noqa: BLE001 - a failing run must answer its requests, not kill the runner
            self._fail(batch, exc)
            return
        finally:
            self.running = 0
        self._deliver(batch, array, outputs, seconds)

    def _run_inline(self, batch):
        array = self._concatenate(batch)
        try:
            outputs, seconds = self._timed_run(array)
        except Exception as exc:  # noqa: BLE001
            self._fail(batch, exc)
            return
        self._deliver(batch, array, outputs, seconds)

    def run_now(self, array, future=None):
        """The idle fast path: with nothing queued or running, another request in flight or a slow model, a lone
        request would only wait for the runner's next turn; an inline model runs it at once, on the caller's turn
        of the event loop (one turn instead of three). Returns a done Pending, or None when the path does not apply.
        """
        if not self.inline or self.queue or self.running:
            return None
        if self._task is None:
            self.start()
        pending = Pending(array, self._loop.create_future() if future is None else future)
        self._run_inline([pending])
        return pending

    @staticmethod
    def _concatenate(batch):
        return batch[0].array if len(batch) == 1 else np.concatenate([p.array for p in batch], axis=0)

    def _fail(self, batch, exc):
        log.error("a batch of %d request(s) failed", len(batch), exc_info=exc)
        error = InferenceFailed(f"Inference failed: {exc}")
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)

    def _deliver(self, batch, array, outputs, seconds):
        self.run_ewma_s = seconds if self.run_ewma_s is None else 0.8 * self.run_ewma_s + 0.2 * seconds
        self.last_batch_requests = len(batch)
        self.batches += 1
        self.drain.record(len(batch))
        if self.metrics is not None:
            self.metrics.batch_size.observe(array.shape[0])
        inference_ms = seconds * 1000.0
        start = 0
        for pending in batch:
            stop = start + pending.rows
            if not pending.future.done():
                pending.future.set_result((outputs, start, stop, inference_ms))
            start = stop

    def _timed_run(self, array):
        started = time.perf_counter()
        outputs = self.model.run(array)
        return outputs, time.perf_counter() - started
