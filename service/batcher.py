"""In-process micro-batching for /predict: photos that arrive while the model is busy run together.

    batcher = Batcher(forward, max_batch=64)      # forward: list of inputs -> list of outputs
    out = await batcher.run([x])                   # from any request handler, in the event loop

Greedy, with no timer: a lone request goes to the model at once (no added latency at concurrency 1),
and under load each batch takes the largest power of two of what queued up during the previous one
(the rest goes first in the next), so the batch size follows the arrival rate up to `max_batch`. One
batch runs at a time per worker process, in a worker thread, so the event loop keeps parsing uploads
while the model works.

Why not BentoML's `batchable` API for /predict: reaching it from inside the service is an HTTP hop
through BentoML's self-proxy (serialise, request, parse, validate, answer, parse again). On the 2-core
machine that hop cost more CPU per photo than the small CNNs themselves (bench/serve.py, README). The
`/infer` API stays `batchable` for clients that send pixels.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from service.handoff import Threads


class Batcher:
    """Runs `forward(list_of_inputs) -> list_of_outputs` on batches of concurrently submitted inputs.

    Args:
        forward: a blocking function (run in a worker thread); one output per input, in order.
        max_batch: the most inputs one `forward` call gets.
        on_batch: called with each batch's size (a metric).
    """

    def __init__(self, forward: Callable[[list], Sequence], max_batch: int,
                 on_batch: Callable[[int], Any] | None = None) -> None:
        self.forward, self.max_batch, self.on_batch = forward, max_batch, on_batch
        self._queue: list[tuple[Any, asyncio.Future, object]] = []   # (input, its future, its call)
        self._drainer: asyncio.Task | None = None          # a reference keeps the task alive
        # one long-lived model thread (service/handoff.py): cheaper to hand work to than anyio's pool
        # or an executor, and torch's per-thread settings (number of intra-op threads) hold for every batch
        self._thread = Threads(1, "model")

    async def run(self, items: Sequence) -> list:
        """Queues `items` (kept together where they fit one batch) and waits for their outputs.

        One call's items succeed or fail together: when a batch holding some of them fails, the
        call's items still queued never reach the model (they fail with the same error).

        Raises:
            whatever `forward` raised for a batch holding any of these items.
        """
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        call = object()
        self._queue.extend((x, f, call) for x, f in zip(items, futures, strict=True))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        try:
            return [await f for f in futures]
        except BaseException:              # the client went away, or a batch failed: drop the rest
            for f in futures:
                if f.done() and not f.cancelled():
                    f.exception()              # retrieved: no "exception was never retrieved" noise
                else:
                    f.cancel()
            raise

    async def _drain(self) -> None:
        try:
            while self._queue:
                # a power of two: the model's kernels exist for those shapes only (service/forward.py pow2_chunks),
                # and the rest joins what arrives meanwhile instead of running as chunks of 2 and 1,
                # which cost up to twice as much per photo (bench/serve.py)
                n = 1 << (min(len(self._queue), self.max_batch).bit_length() - 1)
                batch, self._queue = self._queue[:n], self._queue[n:]
                batch = [(x, f, c) for x, f, c in batch if not f.done()]   # a cancelled request needs no forward
                if not batch:
                    continue
                if self.on_batch is not None:
                    self.on_batch(len(batch))
                try:
                    outputs = await self._thread.run(self.forward, [x for x, _, _ in batch])
                    if len(outputs) != len(batch):
                        raise RuntimeError(f"forward gave {len(outputs)} outputs for {len(batch)} inputs")
                except Exception as e:  # noqa: BLE001 - the error belongs to the calls in this batch
                    failed = {c for _, _, c in batch}
                    for _, f, c in [*batch, *self._queue]:
                        if c in failed and not f.done():        # their queued rest fails now, unsent
                            f.set_exception(e)
                    continue
                for (_, f, _), y in zip(batch, outputs, strict=True):
                    if not f.done():
                        f.set_result(y)
        finally:
            self._drainer = None
