"""Helper of tests/core/test_distributed.py (not a test): one `fit` on a fixed tiny set, run either as one
process or under torchrun; rank 0 saves the final weights and history to argv[1].

    python tests/ddp_fit.py OUT ARCH...
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_fit.py OUT ARCH...

With DDP_FIT_CHECKPOINT set, each rank checkpoints to `<its working folder>/<ARCH>.ck.pt` (a node's own
disk), writes its pid to OUT/pid-RANK, and rank 0 appends every epoch it runs to OUT/ran.txt; with DDP_FIT_PAUSE=N rank 0 writes
OUT/paused and sleeps after reporting epoch N (before that epoch's checkpoint), to be killed there.
DDP_FIT_LR overrides the learning rate (a node with other params); DDP_FIT_DEVICE=cuda trains
on the rank's GPU (bench/gpu_check.py).
"""
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core import distributed
from pipeline.core.config import load_params
from pipeline.core.data import Part
from pipeline.core.execution import Execution, resolve
from pipeline.core.fit import fit, init_model
from pipeline.core.model import ModelConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny_parts(n_train: int = 97, n_val: int = 40, size: int = 16) -> dict[str, Part]:
    """Random faces whose mean brightness carries the rating: learnable in a few steps. 97 training
    rows in batches of 32 end with a batch of one, which leaves the second rank without rows."""
    rng = np.random.default_rng(0)
    out = {}
    for name, n in (("train", n_train), ("val", n_val)):
        rating = rng.uniform(1, 5, n)
        images = (rng.uniform(0, 1, (n, size, size, 3)) * 128 + rating[:, None, None, None] * 25).astype(np.uint8)
        meta = pd.DataFrame({"filename": [f"{name}{i}.jpg" for i in range(n)], "rating": rating,
                             "gender": np.where(rating > 3, "m", "f"), "group": "asian"})
        out[name] = Part(images, meta)
    return out


def _ran(out: Path, record: dict) -> None:
    """Rank 0's epoch hook: which epochs this process ran; pauses to be killed where asked."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "ran.txt", "a") as f:
        f.write(f"{record['epoch']}\n")
    if str(record["epoch"]) == os.environ.get("DDP_FIT_PAUSE"):
        (out / "paused").touch()
        time.sleep(300)


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    device = torch.device("cpu")
    if os.environ.get("DDP_FIT_DEVICE") == "cuda":       # bench/gpu_check.py on >= 2 GPUs: one per rank
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False   # fp32 as on the CPU
    w = distributed.init(device)
    if os.environ.get("DDP_FIT_CHECKPOINT"):          # torchrun starts workers in their own sessions: the test kills these
        out.mkdir(parents=True, exist_ok=True)
        (out / f"pid-{w.rank}").write_text(str(os.getpid()))
    base = load_params(ROOT / "params.yaml").train.rating
    policy = resolve(Execution("fp32", False), device, threads=1)   # fp32: no bf16 rounding noise
    for arch in sys.argv[2:]:
        # no dropout: its masks are drawn per rank; augmentation stays on (drawn for the global batch)
        cfg = dataclasses.replace(base, arch=arch, widths=(8, 16), dropout=0.0, epochs=4, batch_size=32,
                                  lr=float(os.environ.get("DDP_FIT_LR", 0.01)), patience=100, select="last", ema=0.0)
        net = init_model(ModelConfig(arch, cfg.widths, cfg.dropout, 16), ["rating"], cfg.seed)
        ck = Path.cwd() / f"{arch}.ck.pt" if os.environ.get("DDP_FIT_CHECKPOINT") else None
        res = fit(net, tiny_parts(), "rating", cfg, policy, checkpoint=ck, on_epoch=lambda r: _ran(out, r), w=w)
        if w.main:
            out.mkdir(parents=True, exist_ok=True)
            torch.save({"state": res.best_state, "history": res.history, "world": w.size}, out / f"{arch}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main()
