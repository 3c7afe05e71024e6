"""Long-lived threads that run blocking calls for the event loop: the model's batches (service/batcher.py)
and the decoders' round trips (service/decoder.py).

    threads = Threads(2, "decode")
    result = await threads.run(fn, *args)     # fn(*args) in one of the threads; its error is raised here

A call goes into a queue and its outcome comes back with `call_soon_threadsafe`: one asyncio future
per call. `loop.run_in_executor` also builds a concurrent.futures.Future (with its Condition) and
chains the two; at concurrency 32 that hand-over was ~5 % of a worker's event loop (py-spy).
A cancelled caller stops waiting; a call already taken by a thread runs to its end (its outcome is
dropped), so the callee decides how to stop early (the decoder's `_Job.stopped`).
"""
from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any


class Threads:
    def __init__(self, n: int, name: str):
        self.jobs: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.jobs.put((fn, args, loop, future))
        return await future

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            fn, args, loop, future = job
            try:
                result, error = fn(*args), None
            except Exception as e:  # noqa: BLE001 - raised in the caller
                result, error = None, e
            with contextlib.suppress(RuntimeError):        # the caller's event loop has closed
                loop.call_soon_threadsafe(_deliver, future, result, error)

    def close(self) -> None:
        """The threads end once the calls queued before this one are done."""
        for _ in self.threads:
            self.jobs.put(None)


def _deliver(future: asyncio.Future, result: Any, error: Exception | None) -> None:
    """On the event loop: the call's outcome, unless its caller was cancelled meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
