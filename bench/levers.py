"""Inference-time levers measured on a finished run's split models and test photos (no training):
averaging the gender probability of both networks (each trunk has a gender head), averaging the
rating of both, and multi-crop test-time augmentation (shifted copies on top of the flip).

    python bench/levers.py --root /path/to/a/run      # a repo folder after `make repro PROFILE=scut ...`

Prints each variant's test metric next to the served recipe's, with a paired bootstrap 95 % interval
of the difference over the test photos: a lever is worth serving only when that interval excludes 0.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.data import load_parts, on_served_scale
from pipeline.core.execution import Execution, resolve, select_device
from pipeline.core.metrics import compute_metrics
from pipeline.core.model import TaskModel, for_inference, load_bundle, predict


def shifted(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Photos moved by (dx, dy) pixels with reflected borders, as the training augmentation shifts them."""
    pad = max(abs(dx), abs(dy))
    p = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    s = images.shape[1]
    return np.ascontiguousarray(p[:, pad + dy:pad + dy + s, pad + dx:pad + dx + s])


def views(model, images, policy, crops: int) -> np.ndarray:
    """Flip-averaged predictions, averaged over `crops` shifted copies (1: the served flip average)."""
    k = max(1, round(0.03 * images.shape[1]))
    moves = [(0, 0), (k, 0), (-k, 0), (0, k), (0, -k)][:crops]
    return np.mean([predict(model, shifted(images, dx, dy), 128, True, policy) for dx, dy in moves], axis=0)


def paired(task: str, metric: str, y, base, new, n: int = 1000) -> tuple[float, float, float]:
    """metric(new) - metric(base) and its paired bootstrap 95 % interval over the photos."""
    rng = np.random.default_rng(0)
    def f(idx, p):
        return compute_metrics(task, y[idx], p[idx])[metric]

    every = np.arange(len(y))
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        diffs.append(f(idx, new) - f(idx, base))
    return f(every, new) - f(every, base), *np.percentile(diffs, [2.5, 97.5])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    maps = load_bundle(args.root / "models/rating/model.pt")[1].get("trained_on", {}).get("rating_scales", {})
    # every source's ratings on the served scale, by the rating model's own map (pipeline/core/scales.py)
    test = on_served_scale(load_parts(args.root / "data/ingested", args.root / "data/split", ("test",)), maps)["test"]
    nets = {}
    for task in ("gender", "rating"):
        net, bundle = load_bundle(args.root / f"models/{task}/model.pt")
        policy = resolve(Execution.from_bundle(bundle.get("execution")), select_device("cpu"))
        nets[task] = for_inference(net, policy)
    out = {(net, head, c): views(TaskModel(nets[net], head), test.images, policy, c)
           for net in nets for head in ("gender", "rating") for c in (1, 5)}
    for head, metric in (("gender", "accuracy"), ("rating", "pearson"), ("rating", "mae")):
        y = test.targets(head).numpy()
        base = out[(head, head, 1)]
        other = "rating" if head == "gender" else "gender"
        variants = {f"{other} net's {head} head": out[(other, head, 1)],
                    "both nets averaged": (base + out[(other, head, 1)]) / 2,
                    "5 shifted crops x flip": out[(head, head, 5)],
                    "both nets x 5 crops": (out[(head, head, 5)] + out[(other, head, 5)]) / 2}
        sign = -1 if metric == "mae" else 1
        print(f"{head} {metric}: served ({head} net, flip) {compute_metrics(head, y, base)[metric]:.4f}")
        for name, pred in variants.items():
            d, lo, hi = paired(head, metric, y, base, pred)
            good = "better" if min(sign * lo, sign * hi) > 0 else ("worse" if max(sign * lo, sign * hi) < 0 else "")
            print(f"  {name:28s} {compute_metrics(head, y, pred)[metric]:.4f}  diff {d:+.4f} [{lo:+.4f}, {hi:+.4f}] {good}")


if __name__ == "__main__":
    main()
