"""service/handoff.py: blocking calls in long-lived threads, their outcome back on the event loop."""
import asyncio
import threading
import time

import pytest

from service.handoff import Threads


def test_calls_run_in_the_named_threads_and_return_or_raise_in_the_caller():
    threads = Threads(2, "t")

    def where(x):
        if x < 0:
            raise ValueError("negative")
        return x * 2, threading.current_thread().name

    async def scenario():
        got = await asyncio.gather(*(threads.run(where, i) for i in range(6)))
        with pytest.raises(ValueError, match="negative"):
            await threads.run(where, -1)
        return got
    got = asyncio.run(scenario())
    assert [x for x, _ in got] == [0, 2, 4, 6, 8, 10] and {n for _, n in got} <= {"t-0", "t-1"}
    threads.close()
    for t in threads.threads:
        t.join(2)
    assert not any(t.is_alive() for t in threads.threads)


def test_a_cancelled_caller_stops_waiting_and_the_thread_goes_on_with_the_next_call():
    threads = Threads(1, "t")
    release, ran = threading.Event(), []

    def slow():
        release.wait(5)
        ran.append("slow")
        return "late"

    async def scenario():
        task = asyncio.ensure_future(threads.run(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        return await threads.run(lambda: "next")         # the dropped outcome breaks nothing
    t0 = time.monotonic()
    assert asyncio.run(scenario()) == "next" and ran == ["slow"] and time.monotonic() - t0 < 5
    threads.close()
