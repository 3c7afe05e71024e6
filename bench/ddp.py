"""Data-parallel training, measured: the train stage as 1 process and under torchrun as N, same data,
same recipe, same global batch, interleaved (1, N, 1, N, ...) so that drift of the machine hits both.

    python bench/ddp.py [--task rating] [--nproc 2] [--epochs 2] [--rounds 2]    (make bench-ddp)

Runs `python -m pipeline.stages.train` on the last `dvc repro`'s data/ingested + data/split with a params
file of its own (train.nproc, the epochs, an MLflow sqlite file in a temp folder: the project's runs
and models are not touched). Prints per configuration: wall time of the command (start-up, torchrun's
rendezvous, training, rank 0's logging), training time (the epochs' own seconds) and samples/s of
training, and the ratio N vs 1. On 2 cores, 2 processes of 1 thread each compete for the same cores
that 1 process of 2 threads uses: the ratio shows the cost of DDP here, not a speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def one_run(task: str, nproc: int, epochs: int, work: Path) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["nproc"] = nproc
    raw["train"][task].update(epochs=epochs, patience=epochs + 1)
    raw["tracking"]["uri"] = f"sqlite:///{work}/mlflow.db"
    params, out = work / f"params-{nproc}.yaml", work / f"out-{nproc}"
    params.write_text(yaml.safe_dump(raw))
    (out / "checkpoint.pt").unlink(missing_ok=True)          # each run trains from scratch
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)                      # the bench's own sqlite file
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pipeline.stages.train", "--task", task, "--data", "data/ingested",
                        "--split", "data/split", "--out", str(out), "--params", str(params)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"train with nproc={nproc} failed:\n{p.stderr[-3000:]}")
    history = json.loads((out / "history.json").read_text())
    photos = len([n for n in (ROOT / "data/split/train.txt").read_text().split("\n") if n])
    train_s = sum(h["seconds"] for h in history)
    return {"wall_s": wall, "train_s": train_s, "samples_per_s": photos * len(history) / train_s,
            "val": history[-1].get(next(k for k in history[-1] if k.startswith("val_")))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="rating", choices=["gender", "rating"])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not (ROOT / "data/split/train.txt").is_file():
        raise SystemExit("no data/split: run `make repro` first")
    runs: dict[int, list[dict]] = {1: [], args.nproc: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n in runs:
                runs[n].append(one_run(args.task, n, args.epochs, Path(tmp)))
                print(f"round {r + 1} nproc {n}: " + ", ".join(f"{k} {v:.3f}" for k, v in runs[n][-1].items()),
                      flush=True)
    med = {n: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for n, rs in runs.items()}
    print(f"\n{args.task}, {args.epochs} epochs, {os.cpu_count()} cores, medians of {args.rounds} interleaved rounds")
    print("| processes | wall s | training s | samples/s | last val |\n|---|---|---|---|---|")
    for n, m in med.items():
        print(f"| {n} | {m['wall_s']:.1f} | {m['train_s']:.1f} | {m['samples_per_s']:.0f} | {m['val']:.4f} |")
    print(f"samples/s ratio {args.nproc} vs 1: {med[args.nproc]['samples_per_s'] / med[1]['samples_per_s']:.2f}")


if __name__ == "__main__":
    main()
