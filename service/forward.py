"""The served networks' call on a batch of framed photos: the model call of the evaluate stage
(`pipeline.core.model.predict`), on power-of-two chunks, each network's column side by side.

    forward = Forward({"gender": m1, "rating": m2}, ("gender", "rating"), policy, tta_flip=True)
    rows = forward([pixels, ...])          # (S, S, 3) uint8 each -> [[P(male), rating], ...]

Where a worker runs one torch thread (its share of the cores is one: the 2-core default) and the
batch is small (at most AT_ONCE photos: the worker has nothing queued, so the cores have room), the
networks run at once, the last one in a second thread: a lone photo's two forwards then take the time
of the longer one instead of the sum (/predict p50 at concurrency 1 9-21 % lower on an AVX2 CPU,
docs/speed.md). Larger batches mean load: every core is busy already, and a second compute thread
per worker would only take CPU from the event loops that answer and shed requests. With more torch
threads per worker (FACES_CPUS) or on a GPU the networks always run one after the other: two
intra-op thread pools on the same cores would oversubscribe them.
"""
from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping, Sequence

import numpy as np
from torch import nn

from pipeline.core.execution import Policy
from pipeline.core.model import predict

AT_ONCE = 2          # photos: a batch this small runs both networks at once (one-thread CPU workers)


def pow2_chunks(n: int) -> list[tuple[int, int]]:
    """[0, n) as consecutive chunks of descending powers of two (37 -> 32, 4, 1).

    Every distinct batch shape makes torch/oneDNN build and keep kernels and buffers for it: with
    batches of any size from 1 to 64 a worker grew by ~540 MB before levelling off, with power-of-two
    shapes it stayed flat (docs/reliability.md). Splitting, unlike padding, wastes no compute."""
    out, start = [], 0
    for bit in reversed(range(max(n, 1).bit_length())):
        if n & (1 << bit):
            out.append((start, start + (1 << bit)))
            start += 1 << bit
    return out


class Forward:
    """`forward(photos) -> rows`: each photo's outputs of `tasks`' networks, in that order."""

    def __init__(self, models: Mapping[str, nn.Module], tasks: Sequence[str], policy: Policy, tta_flip: bool):
        self.models, self.tasks, self.policy, self.tta_flip = models, tuple(tasks), policy, tta_flip
        at_once = len(self.tasks) > 1 and policy.device.type == "cpu" and policy.threads == 1
        self.side = concurrent.futures.ThreadPoolExecutor(1, "model-side") if at_once else None

    def _column(self, task: str, x: np.ndarray) -> np.ndarray:
        return predict(self.models[task], x, tta_flip=self.tta_flip, policy=self.policy)

    def columns(self, x: np.ndarray, at_once: bool = True) -> list[np.ndarray]:
        """(n, S, S, 3) uint8 -> one (n,) column per task; with `at_once` (and a side thread), the
        last task's in the side thread meanwhile."""
        if self.side is None or not at_once:
            return [self._column(t, x) for t in self.tasks]
        *first, last = self.tasks
        later = self.side.submit(self._column, last, x)     # torch releases the GIL inside its kernels
        try:
            return [*(self._column(t, x) for t in first), later.result()]
        finally:
            later.cancel()                                   # a failed first column leaves none queued

    def __call__(self, photos: list[np.ndarray]) -> list[list[float]]:
        x = np.stack(photos)
        rows: list[list[float]] = []
        for a, b in pow2_chunks(len(x)):
            rows.extend(np.stack(self.columns(x[a:b], at_once=len(x) <= AT_ONCE), axis=1).tolist())
        return rows
