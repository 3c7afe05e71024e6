"""Data-parallel training (core): which rank this process is, its share of a batch, and torchrun.

`python -m pipeline.stages.train ...` runs one process; with `train.nproc > 1` it re-executes itself under
`torchrun --standalone` (one machine). On several machines run torchrun yourself on each one, e.g.

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \
        --rdzv-id faces -m pipeline.stages.train --task rating --data data/ingested --split data/split --out models/rating

Every rank draws the same shuffled order and the same augmentation for the whole global batch
(`train.<task>.batch_size`) and trains on its own contiguous slice of it; DDP averages the gradients,
and `shard_weight` scales each rank's loss so that the average is the global batch's mean loss even
when the slices differ in size. The global batch and so the learning rate do not depend on the
number of processes: N processes take the same optimizer steps as one.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the only one that validates, logs to MLflow and writes files."""
        return self.rank == 0


def world() -> World:
    """This process's place: from torch.distributed once initialised, else from torchrun's variables."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return World(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", 0)))
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ


def torchrun_argv(nproc: int, module: str, argv: list[str]) -> list[str]:
    """The command that runs `python -m module argv` as `nproc` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", module, *argv]


def init(device: torch.device) -> World:
    """Joins the process group torchrun set up (NCCL on CUDA, gloo on CPU); one process: nothing to do."""
    w = world()
    if w.size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        w = world()
    return w


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shard(n: int, w: World) -> tuple[slice, float]:
    """This rank's rows of a global batch of n -> (their positions, loss weight). The weight makes DDP's
    gradient average equal the global batch's mean: rank r's mean loss counts n_r * size / n. A rank
    left without rows (a last batch smaller than the world) trains on one row with weight 0, so that
    every rank still joins the gradient all-reduce."""
    if w.size == 1:
        return slice(None), 1.0
    base, extra = divmod(n, w.size)            # the first `extra` ranks take one row more
    start = w.rank * base + min(w.rank, extra)
    stop = start + base + (w.rank < extra)
    if stop == start:
        return slice(0, 1), 0.0
    return slice(start, stop), (stop - start) * w.size / n


def mean(total: float, count: int, w: World) -> float:
    """The mean over all ranks of per-rank sums (the epoch's training loss)."""
    if w.size == 1:
        return total / count
    t = torch.tensor([total, float(count)], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t[0] / t[1])


def broadcast(value: float, w: World) -> float:
    """Rank 0's number on every rank (the validation metric that decides early stopping)."""
    if w.size == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return float(box[0])


def sync_batchnorm(net: torch.nn.Module, device: torch.device, w: World) -> torch.nn.Module:
    """BatchNorm statistics over the global batch on CUDA (SyncBatchNorm). On CPU torch has no
    SyncBatchNorm, so each rank normalises its own slice: with slices of >= 32 photos (batch 64 on 2
    ranks) the statistics are as stable as a single GPU's, the running averages are taken from rank 0
    (DDP broadcasts buffers), and the test bounds the difference to single-process training."""
    if w.size > 1 and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net
