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

On CUDA the process group has two backends (`backend`): NCCL for CUDA tensors, gloo for CPU objects.
Before training the ranks compare their run fingerprints (`agree`: a node with other code, params or
data stops the run in one line), and they resume from one checkpoint that every rank loads
(pipeline/core/checkpoint.py). tests/core/test_distributed.py runs two nodes on loopback, kills and
resumes them.
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


def backend(device: torch.device) -> str:
    """gloo on CPU; on CUDA a group with both backends: NCCL moves CUDA tensors (the gradients, the
    loss mean) and accepts nothing else, gloo moves the CPU ones (object collectives: the checkpoint,
    the fingerprints, the RNG states)."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def check_devices(device: torch.device, local_size: int) -> None:
    """One process per GPU: more processes on a node than it has GPUs would share one (or crash in
    NCCL later); stops in one line on every rank before the process group forms."""
    if device.type == "cuda" and local_size > (n := torch.cuda.device_count()):
        raise SystemExit(f"train: {local_size} processes on this node but {n} GPU(s) visible: "
                         f"set train.nproc (or torchrun --nproc-per-node) to at most {n}")


def init(device: torch.device) -> World:
    """Joins the process group torchrun set up (backend(device)); one process: nothing to do."""
    w = world()
    if w.size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend(device))
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


def mean(total: float, count: int, w: World, device: torch.device) -> float:
    """The mean over all ranks of per-rank sums (the epoch's training loss), reduced on the training
    device (NCCL reduces only CUDA tensors)."""
    if w.size == 1:
        return total / count
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t[0] / t[1])


def broadcast(value: float, w: World, device: torch.device) -> float:
    """Rank 0's number on every rank (the validation metric that decides early stopping)."""
    if w.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.broadcast(t, src=0)
    return float(t[0])


def gather(obj: object, w: World) -> list:
    """Every rank's `obj`, in rank order, on every rank (pickled; CPU, gloo)."""
    if w.size == 1:
        return [obj]
    out: list = [None] * w.size
    torch.distributed.all_gather_object(out, obj)
    return out


def send(obj: object, src: int, w: World) -> object:
    """Rank `src`'s `obj` on every rank (pickled; CPU, gloo)."""
    if w.size == 1:
        return obj
    box = [obj if w.rank == src else None]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def agree(value: str, what: str, w: World) -> None:
    """Fails on every rank, in one line, unless all ranks hold the same `value` (e.g. the run's
    fingerprint: nodes with different code, params or data would train different things silently)."""
    values = gather(value, w)
    if len(set(values)) > 1:
        odd = next(r for r, v in enumerate(values) if v != values[0])
        raise SystemExit(f"train: rank {odd}'s {what} is {values[odd]}, rank 0's is {values[0]}: "
                         "every node must run the same code, params and data")


def sync_batchnorm(net: torch.nn.Module, device: torch.device, w: World) -> torch.nn.Module:
    """BatchNorm statistics over the global batch on CUDA (SyncBatchNorm). On CPU torch has no
    SyncBatchNorm, so each rank normalises its own slice: with slices of >= 32 photos (batch 64 on 2
    ranks) the statistics are as stable as a single GPU's, the running averages are taken from rank 0
    (DDP broadcasts buffers), and the test bounds the difference to single-process training."""
    if w.size > 1 and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net
