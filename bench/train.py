"""Training speed, measured side by side in one run: the old float32 NCHW path against the execution
policy of params.yaml (bf16 autocast + channels_last where the CPU has bf16), on the real step.

    make bench-train        # = python bench/train.py [--steps 12] [--profile scut]

For the default run's two networks and the real-photo profile's two (profiles/scut.yaml), at their own
image size and batch size, it builds each network twice from the same seed and alternates one
training step of the old path and one of the new, `--steps` times after a warm-up, so both see the
same minutes of this machine. Each step is pipeline.core.fit.train_step, fed by pipeline.core.data's
`batches` + `augment` (the input pipeline, timed apart from the step). The old path is float32 NCHW
with the per-image Python slice of the shift augmentation it used to have.

Prints the machine's roofline first (bench/roofline.py: the CPU kind and its attainable GMAC/s), then
per network: median ms per step (input, step), steps/s, images/s, achieved GMAC/s (training
~ 3x the forward multiply-accumulates: forward, input gradient, weight gradient) and that as a
fraction of the roofline of the path's precision, the input pipeline's share of a step, and the
new/old images/s ratio. Where the profile trains its first epochs smaller (train.<task>.small_size,
progressive resizing), a third path `small` times that step too, and the run's training time with it is
printed as a fraction of all epochs at full size. Target: >= 2.5x for the profile's rating
net at its batch size (issue 12); input <= 10 % of a step.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.cli.profile import load_profile
from pipeline.core import data as data_module
from pipeline.core.config import load_params
from pipeline.core.data import Augment, Part, augment, batches, shrink
from pipeline.core.execution import Execution, resolve
from pipeline.core.fit import _loss_fns, init_model, train_step
from pipeline.core.layers import layer_table
from pipeline.core.model import ModelConfig

from roofline import measure

ROOT = Path(__file__).resolve().parents[1]


def _sliced_shift(padded: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, s: int) -> torch.Tensor:
    """The shift crop as it was before the policy: one Python slice per image, then a stack."""
    return torch.stack([padded[i, :, dy[i]:dy[i] + s, dx[i]:dx[i] + s] for i in range(len(padded))])


@contextlib.contextmanager
def old_input():
    """pipeline.core.data.augment with the old per-image shift, for the baseline's steps only."""
    batched, data_module.shift_crop = data_module.shift_crop, _sliced_shift
    try:
        yield
    finally:
        data_module.shift_crop = batched


def fake_part(n: int, size: int, seed: int = 0) -> Part:
    """n random uint8 faces with labels of every task (speed does not depend on the pixels)."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"filename": [f"{i}.jpg" for i in range(n)], "gender": rng.choice(["f", "m"], n),
                         "group": rng.choice(["asian", "caucasian"], n), "rating": rng.uniform(1, 5, n)})
    return Part(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), meta)


class Runner:
    """One network + optimizer + schedule under one policy, stepping through batches of a part."""

    def __init__(self, task, cfg, size: int, policy, part: Part, steps: int, old: bool, shrunk: int = 0):
        self.net = init_model(ModelConfig(cfg.arch, cfg.widths, cfg.dropout, size), [task, *cfg.aux_tasks], cfg.seed)
        self.macs = sum(r.macs for r in layer_table(self.net, shrunk or size))   # forward, per image
        self.policy, self.part, self.old, self.batch, self.shrunk = policy, part, old, cfg.batch_size, shrunk
        self.losses = _loss_fns(task, cfg)
        self.targets = {h: part.targets(h) for h in self.losses}
        policy.model(self.net).train()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=cfg.lr, total_steps=steps + 10)
        self.aug = Augment(**dataclasses.asdict(cfg.augment))
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.it = iter(())

    def step(self) -> tuple[float, float]:
        """-> (seconds in the input pipeline, seconds in the step), the loss read (synchronised)."""
        t0 = time.perf_counter()
        with old_input() if self.old else contextlib.nullcontext():
            try:
                idx, x = next(self.it)
            except StopIteration:
                self.it = batches(self.part, self.batch, self.gen)
                idx, x = next(self.it)
            x = shrink(augment(x, self.aug, self.gen), self.shrunk)     # progressive resizing's early epochs
        t1 = time.perf_counter()
        loss = train_step(self.net, x, {h: t[idx] for h, t in self.targets.items()}, self.losses, self.opt,
                          self.sched, self.policy)
        loss.item()
        return t1 - t0, time.perf_counter() - t1


def bench_net(name: str, task: str, cfg, size: int, execution: Execution, steps: int, warmup: int) -> dict:
    device = torch.device("cpu")
    part = fake_part(cfg.batch_size * 4, size)             # full batches only: every step is the same shape
    runners = {"old": Runner(task, cfg, size, resolve(Execution("fp32", False), device), part, steps + warmup, True),
               "new": Runner(task, cfg, size, resolve(execution, device), part, steps + warmup, False)}
    if cfg.small_size:                   # progressive resizing: the early epochs' step, at the smaller side
        runners["small"] = Runner(task, cfg, size, resolve(execution, device), part, steps + warmup, False,
                                  cfg.small_size)
    times = {k: [] for k in runners}
    for i in range(warmup + steps):
        for k, r in runners.items():                         # interleaved: old, new, old, new, ...
            t = r.step()
            if i >= warmup:
                times[k].append(t)
    out = {"name": name, "batch": cfg.batch_size, "size": size, "gmac_per_image": runners["new"].macs / 1e9}
    for k, ts in times.items():
        inp, step = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
        total = inp + step
        out[k] = {"input_ms": inp * 1e3, "step_ms": step * 1e3, "steps_s": 1 / total,
                  "images_s": cfg.batch_size / total, "gmacs": 3 * runners[k].macs * cfg.batch_size / step / 1e9,
                  "input_share": inp / total}
    out["ratio"] = out["new"]["images_s"] / out["old"]["images_s"]
    if "small" in out:               # the run's training time with progressive resizing / all epochs at full size
        e, k = cfg.epochs, cfg.small_epochs
        out["progressive"] = (k * out["new"]["images_s"] / out["small"]["images_s"] + e - k) / e
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Training step: old fp32 NCHW vs the execution policy, interleaved")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile", default="scut")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0: all cores (as train does)")
    args = ap.parse_args()
    base = load_params(ROOT / "params.yaml")
    prof = load_profile(args.profile, params=ROOT / "params.yaml")
    execution = Execution(base.train.precision, base.train.channels_last)
    policy = resolve(execution, torch.device("cpu"), args.threads)
    policy.apply()
    roof = measure(policy.threads, seconds=5)
    print(roof.line())
    print(f"policy: {policy.describe()}  (old: fp32 nchw, per-image shift)")
    nets = [(f"default {t}", t, getattr(base.train, t), base.ingest.image_size) for t in ("gender", "rating")]
    nets += [(f"{args.profile} {t}", t, getattr(prof.train, t), prof.ingest.image_size) for t in ("gender", "rating")]
    print(f"{'network':<14} {'batch':>5} {'px':>4} {'path':<5} {'input ms':>9} {'step ms':>9} {'steps/s':>8} "
          f"{'img/s':>7} {'GMAC/s':>7} {'% roof':>7} {'input %':>8} {'new/old':>8}")
    for name, task, cfg, size in nets:
        r = bench_net(name, task, cfg, size, execution, args.steps, args.warmup)
        for k in [k for k in ("old", "new", "small") if k in r]:
            m = r[k]
            ratio = {"new": f"{r['ratio']:7.2f}x", "small": f"{m['images_s'] / r['new']['images_s']:7.2f}x"}.get(k, "")
            peak = roof.peak("fp32" if k == "old" else str(policy.describe()["precision"]))
            px = cfg.small_size if k == "small" else r["size"]
            print(f"{name:<14} {r['batch']:>5} {px:>4} {k:<5} {m['input_ms']:9.1f} {m['step_ms']:9.1f} "
                  f"{m['steps_s']:8.2f} {m['images_s']:7.0f} {m['gmacs']:7.1f} {m['gmacs'] / peak:7.0%} "
                  f"{m['input_share']:8.1%} {ratio:>8}")
        if "progressive" in r:
            print(f"{name:<14} progressive resizing ({cfg.small_size} px for {cfg.small_epochs} of {cfg.epochs} epochs): "
                  f"{r['progressive']:.2f}x the training time of {cfg.epochs} epochs at {size} px")
    print("target: profile rating net >= 2.5x images/s; input <= 10 % of a step (small: its images/s / new's)")


if __name__ == "__main__":
    main()
