"""Training checkpoints (core): what an interrupted run needs to continue bit for bit, on one process or
on many processes across nodes.

Rank 0 writes `checkpoint.pt` after every epoch, on its own disk. On several nodes the other ranks'
disks have none, or an older one, and after a restart the rendezvous may hand rank 0 to another node.
So on resume every rank reads its own file, the ranks agree on the newest usable one, and the rank
that holds it sends it to all (`agreed`); every rank then loads it before DDP wraps the network.
The RNG state of every rank (CPU and CUDA) is gathered into the file and each rank gets its own back.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from pipeline.core import distributed
from pipeline.core.atomic import atomic_path
from pipeline.core.distributed import World


def rng_state(device: torch.device) -> dict:
    """This process's random streams: dropout draws from them (per rank), augmentation does not."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def save(path: Path, fp: str, parts: dict, state: dict, w: World, device: torch.device,
         finished: bool = False) -> None:
    """Called on every rank (it gathers their RNG states); rank 0 writes. `parts`: the net, opt,
    sched, gen (the batch-order generator) and ema (or None) to store. `finished` marks a run that
    ended normally, which the next run does not resume."""
    rngs = distributed.gather(rng_state(device), w)
    if not w.main:
        return
    ema = parts["ema"]
    with atomic_path(path) as tmp:          # a kill mid-save keeps the previous epoch's checkpoint
        torch.save({"fingerprint": fp, "model": parts["net"].state_dict(), "opt": parts["opt"].state_dict(),
                    "sched": parts["sched"].state_dict(), "gen": parts["gen"].get_state(), "rng": rngs,
                    "state": state, "finished": finished, "ema": ema.state_dict() if ema is not None else None}, tmp)


def read(path: Path | None) -> dict | None:
    """The checkpoint at `path`, or None when there is none or it cannot be read (truncated or
    corrupt, e.g. written by a process killed mid-save before saves were atomic): reported, and
    training starts over instead of failing on every later run."""
    if path is None or not path.is_file():
        return None
    try:
        ck = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(ck, dict) or "fingerprint" not in ck:
            raise ValueError("not a training checkpoint")
        return ck
    except Exception as e:  # noqa: BLE001 - zip, pickle and shape errors all mean "unusable"
        print(f"train: checkpoint {path} is unreadable ({type(e).__name__}: {str(e)[:120]}); starting over",
              file=sys.stderr)
        return None


def _usable(ck: dict | None, fp: str, w: World) -> bool:
    """Only an interrupted run of the same fingerprint (which includes the process count) resumes."""
    return (ck is not None and ck["fingerprint"] == fp and not ck.get("finished")
            and isinstance(ck.get("rng"), list) and len(ck["rng"]) == w.size)


def agreed(path: Path | None, fp: str, w: World) -> dict | None:
    """The checkpoint every rank resumes from (the same on all), or None to start over. Called on
    every rank: each reads its own `path`; the newest usable one wins (ties: the lowest rank)."""
    ck = read(path)
    epoch = ck["state"]["epoch"] if _usable(ck, fp, w) else -1     # type: ignore[index]  # _usable: not None
    epochs = distributed.gather(epoch, w)
    src = max(range(w.size), key=lambda r: (epochs[r], -r))
    if epochs[src] < 0:
        return None
    return distributed.send(ck if w.rank == src else None, src, w)   # type: ignore[return-value]


def restore(ck: dict, parts: dict, w: World, device: torch.device) -> dict:
    """Loads `ck` into parts (net, opt, sched, gen, ema) and this rank's RNG -> the loop's state."""
    parts["net"].load_state_dict(ck["model"])
    parts["opt"].load_state_dict(ck["opt"])
    parts["sched"].load_state_dict(ck["sched"])
    parts["gen"].set_state(ck["gen"])
    if parts["ema"] is not None:
        parts["ema"].load_state_dict(ck["ema"])
    set_rng_state(ck["rng"][w.rank], device)
    return ck["state"]
