"""service/batcher.py: a lone photo runs at once, photos that queue behind a busy model share a batch."""
import asyncio
import threading

import pytest

from service.batcher import Batcher


class GatedForward:
    """A forward that records each batch and, while `gate` is clear, blocks like a slow model."""

    def __init__(self, fail_on=None):
        self.batches, self.gate, self.entered = [], threading.Event(), threading.Event()
        self.fail_on = fail_on

    def __call__(self, xs):
        self.batches.append(list(xs))
        self.entered.set()
        self.gate.wait(10)
        if self.fail_on is not None and self.fail_on in xs:
            raise ValueError(f"bad input {self.fail_on}")
        return [x * 10 for x in xs]


async def _busy(b: Batcher, fwd: GatedForward, x) -> asyncio.Task:
    """Submits [x] and returns once the model is working on it (the gate holds it there)."""
    first = asyncio.create_task(b.run([x]))
    await asyncio.to_thread(fwd.entered.wait, 10)
    return first


def test_a_lone_request_goes_to_the_model_alone_and_at_once():
    async def main():
        fwd = GatedForward()
        fwd.gate.set()
        return await Batcher(fwd, max_batch=8).run([3]), fwd.batches

    assert asyncio.run(main()) == ([30], [[3]])


def test_requests_that_arrive_while_the_model_is_busy_share_the_next_batch_in_order():
    async def main():
        fwd, sizes = GatedForward(), []
        b = Batcher(fwd, max_batch=8, on_batch=sizes.append)
        first = await _busy(b, fwd, 1)
        rest = [asyncio.create_task(b.run([x])) for x in (2, 3, 4)]
        many = asyncio.create_task(b.run([5, 6]))
        await asyncio.sleep(0.05)
        fwd.gate.set()
        return await first, [await t for t in rest], await many, fwd.batches, sizes

    first, rest, many, batches, sizes = asyncio.run(main())
    assert (first, rest, many) == ([10], [[20], [30], [40]], [50, 60])
    assert batches == [[1], [2, 3, 4, 5], [6]] and sizes == [1, 4, 1]     # powers of two, in order


def test_no_batch_exceeds_max_batch():
    async def main():
        fwd = GatedForward()
        b = Batcher(fwd, max_batch=2)
        first = await _busy(b, fwd, 0)
        out = asyncio.create_task(b.run([1, 2, 3, 4, 5]))
        await asyncio.sleep(0.05)
        fwd.gate.set()
        return await first, await out, fwd.batches

    first, out, batches = asyncio.run(main())
    assert out == [10, 20, 30, 40, 50]
    assert batches == [[0], [1, 2], [3, 4], [5]]


def test_a_failing_batch_fails_only_its_own_requests_and_the_batcher_goes_on():
    async def main():
        fwd = GatedForward(fail_on=2)
        b = Batcher(fwd, max_batch=2)
        first = await _busy(b, fwd, 1)
        doomed = [asyncio.create_task(b.run([x])) for x in (2, 3)]
        fine = asyncio.create_task(b.run([4]))
        await asyncio.sleep(0.05)
        fwd.gate.set()
        results = await asyncio.gather(first, *doomed, fine, return_exceptions=True)
        return results, await b.run([7])

    (first, d2, d3, fine), later = asyncio.run(main())
    assert first == [10] and fine == [40] and later == [70]
    assert isinstance(d2, ValueError) and isinstance(d3, ValueError) and "bad input 2" in str(d3)


def test_a_forward_that_loses_outputs_is_an_error_not_a_hang():
    async def main():
        return await Batcher(lambda xs: xs[:-1], max_batch=4).run([1, 2])

    with pytest.raises(RuntimeError, match="1 outputs for 2 inputs"):
        asyncio.run(main())


def test_a_request_cancelled_while_queued_is_not_sent_to_the_model():
    async def main():
        fwd = GatedForward()
        b = Batcher(fwd, max_batch=8)
        first = await _busy(b, fwd, 1)
        gone, kept = asyncio.create_task(b.run([2])), asyncio.create_task(b.run([3]))
        await asyncio.sleep(0.01)
        gone.cancel()                                  # the client hung up while waiting
        await asyncio.sleep(0.01)
        fwd.gate.set()
        return await first, await kept, fwd.batches

    first, kept, batches = asyncio.run(main())
    assert (first, kept) == ([10], [30]) and batches == [[1], [3]]


def test_a_call_whose_batch_fails_sends_none_of_its_later_items_to_the_model():
    async def main():
        fwd = GatedForward(fail_on=3)
        b = Batcher(fwd, max_batch=2)
        first = await _busy(b, fwd, 0)
        split = asyncio.create_task(b.run([1, 2, 3, 4, 5, 6]))      # batches [1, 2], [3, 4], [5, 6]
        other = asyncio.create_task(b.run([7]))                      # another caller, in the last batch
        await asyncio.sleep(0.05)
        fwd.gate.set()
        return await first, await asyncio.gather(split, other, return_exceptions=True), fwd.batches

    first, (split, other), batches = asyncio.run(main())
    assert first == [0] and isinstance(split, ValueError) and "bad input 3" in str(split)
    assert other == [70]
    assert batches == [[0], [1, 2], [3, 4], [7]]            # 5 and 6 never reached the model
