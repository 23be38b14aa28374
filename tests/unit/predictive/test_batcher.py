"""The dynamic batcher with a fake model: rows never mix, shapes never mix, limits hold, failures and
disconnects are contained, Retry-After follows the drain rate."""
import asyncio

import numpy as np
import pytest

from foundry_inference.apps.predictive.batcher import Batcher, DrainRate, InferenceFailed, QueueFull
from foundry_inference.apps.predictive.metrics import PredictiveMetrics

pytestmark = pytest.mark.unit


class FakeModel:
    batchable = True

    def __init__(self, fail_on=None, delay=0.0):
        self.batches = []
        self.fail_on = fail_on
        self.delay = delay

    def run(self, array):
        if self.delay:
            import time
            time.sleep(self.delay)
        self.batches.append(array.shape)
        if self.fail_on is not None and (array == self.fail_on).any():
            raise RuntimeError("boom")
        # two outputs following the batch axis: the row sums and the rows themselves
        return [array.sum(axis=tuple(range(1, array.ndim))), array * 1]


def run(coro):
    return asyncio.run(coro)


async def collect(batcher, arrays):
    pendings = [batcher.submit(a) for a in arrays]
    results = await asyncio.gather(*(p.future for p in pendings), return_exceptions=True)
    return results


def own_rows(result):
    outputs, start, stop, _ = result
    return outputs[1][start:stop]


@pytest.mark.parametrize("inline", [True, False])
def test_each_request_gets_exactly_its_rows(inline):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(int(rng.integers(1, 4)), 5)).astype(np.float32) for _ in range(90)]
    model = FakeModel()

    async def main():
        batcher = Batcher(model, max_batch_size=16, queue_depth=1000, inline=inline).start()
        results = await collect(batcher, arrays)
        await batcher.stop()
        return results, batcher
    results, batcher = run(main())
    for array, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(own_rows(result), array)
        outputs, start, stop, _ = result
        np.testing.assert_allclose(outputs[0][start:stop], array.sum(axis=1), rtol=1e-6)
    assert batcher.batches < len(arrays)                       # coalesced
    assert all(shape[0] <= 16 for shape in model.batches)     # never over max rows
    assert sum(shape[0] for shape in model.batches) == sum(a.shape[0] for a in arrays)


def test_requests_with_different_row_shapes_are_not_concatenated():
    model = FakeModel()
    arrays = [np.ones((1, 3)), np.ones((1, 5)), np.full((2, 3), 2.0), np.full((1, 5), 3.0)]

    async def main():
        batcher = Batcher(model, max_batch_size=32, inline=True).start()
        results = await collect(batcher, arrays)
        await batcher.stop()
        return results
    results = run(main())
    for array, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(own_rows(result), array)
    assert sorted(model.batches) == [(2, 5), (3, 3)]


def test_a_request_larger_than_the_batch_runs_alone_and_fixed_models_do_not_batch():
    model = FakeModel()

    async def main():
        batcher = Batcher(model, max_batch_size=4, inline=True).start()
        results = await collect(batcher, [np.ones((10, 2)), np.ones((1, 2)), np.ones((1, 2))])
        await batcher.stop()
        return results
    run(main())
    assert model.batches == [(10, 2), (2, 2)]
    unbatched = FakeModel()
    unbatched.batchable = False

    async def main2():
        batcher = Batcher(unbatched, max_batch_size=32, inline=True).start()
        await collect(batcher, [np.ones((1, 2))] * 3)
        await batcher.stop()
    run(main2())
    assert unbatched.batches == [(1, 2)] * 3


def test_a_failing_run_fails_only_its_batch_and_the_runner_goes_on():
    model = FakeModel(fail_on=-1.0)

    async def main():
        batcher = Batcher(model, max_batch_size=2, inline=True).start()
        first = await collect(batcher, [np.full((1, 2), -1.0), np.ones((1, 2))])
        second = await collect(batcher, [np.ones((1, 2))])
        await batcher.stop()
        return first, second
    first, second = run(main())
    assert all(isinstance(r, InferenceFailed) for r in first)
    np.testing.assert_array_equal(own_rows(second[0]), np.ones((1, 2)))


def test_queue_full_and_cancelled_requests():
    model = FakeModel()
    metrics = PredictiveMetrics()

    async def main():
        batcher = Batcher(model, max_batch_size=8, queue_depth=3, inline=True, metrics=metrics)
        batcher.start()
        pendings = [batcher.submit(np.full((1, 2), i, dtype=np.float32)) for i in range(3)]
        with pytest.raises(QueueFull) as info:
            batcher.submit(np.ones((1, 2)))
        assert info.value.depth == 3 and info.value.retry_after >= 1
        assert str(info.value).startswith("Queue full: ")
        pendings[1].future.cancel()                 # the client went away
        extra = batcher.submit(np.full((1, 2), 9, dtype=np.float32))   # a cancelled slot is purged when full
        results = await asyncio.gather(pendings[0].future, pendings[2].future, extra.future)
        await batcher.stop()
        return results
    results = run(main())
    assert [own_rows(r)[0, 0] for r in results] == [0, 2, 9]
    assert sum(shape[0] for shape in model.batches) == 3          # the cancelled row never ran
    assert metrics.dropped._value.get() == 1


def test_drain_rate_and_retry_after():
    drain = DrainRate(window_s=5.0)
    assert drain.per_second(now=100.0) is None
    for i in range(10):
        drain.record(10, now=100.0 + i * 0.1)        # 100 requests in ~1 s
    rate = drain.per_second(now=101.0)
    assert 90 <= rate <= 110
    assert drain.per_second(now=200.0) is None         # the window forgets
    batcher = Batcher(FakeModel(), max_batch_size=8, queue_depth=1000)
    batcher.drain = drain
    for i in range(10):
        drain.record(10, now=300.0 + i * 0.1)
    batcher.queue.extend([object()] * 250)
    assert batcher.retry_after(now=301.0) == 3        # 250 waiting at ~100/s


def test_retry_after_without_history_uses_the_measured_run_time():
    batcher = Batcher(FakeModel(), max_batch_size=10, queue_depth=1000, run_estimate_s=0.5)
    batcher.queue.extend([object()] * 100)             # 10 batches of 0.5 s
    assert batcher.retry_after() == 5


def test_linger_coalesces_requests_arriving_over_several_loop_turns():
    model = FakeModel()

    async def main():
        batcher = Batcher(model, max_batch_size=64, max_wait_ms=50, inline=True).start()
        batcher.last_batch_requests = 2           # concurrency was seen: lingering is on

        async def trickle():
            futures = []
            for i in range(6):
                futures.append(batcher.submit(np.full((1, 2), i, dtype=np.float32)).future)
                await asyncio.sleep(0)
            return await asyncio.gather(*futures)
        results = await trickle()
        await batcher.stop()
        return results
    results = run(main())
    assert [own_rows(r)[0, 0] for r in results] == list(range(6))
    assert len(model.batches) <= 2


def test_idle_fast_path_runs_at_once_only_when_nothing_waits():
    model = FakeModel()

    async def main():
        batcher = Batcher(model, max_batch_size=8, inline=True)
        done = batcher.run_now(np.full((1, 2), 7.0))
        assert done is not None and done.future.done()
        np.testing.assert_array_equal(own_rows(done.future.result()), np.full((1, 2), 7.0))
        queued = batcher.submit(np.ones((1, 2)))
        assert batcher.run_now(np.ones((1, 2))) is None          # someone is waiting: keep FIFO order
        await queued.future
        threaded = Batcher(model, max_batch_size=8, inline=False)
        assert threaded.run_now(np.ones((1, 2))) is None         # slow models never run on the loop
        await batcher.stop()
        await threaded.stop()
    run(main())
    assert model.batches[0] == (1, 2)
