"""Does a refit that starts from the split model lose anything? The check one level down, on photos
that neither model saw.

    make refit-check            # = python bench/refit_check.py [--scratch] [--fractions 0.25 0.125],
                                #   after a profile run in this clone

The served refit learns from every photo, so nothing here can test it. This reproduces it one level
down: the split model (trained on the split's `train` part) is refitted on train + val the way
params.yaml's `refit` says (start, fraction, lr_scale, budget: pipeline/stages/refit.py's own
`refit_config` and `starting_net`), and both are scored on the `test` part, with evaluate's scoring
(flip averaging, the stored execution policy). `--scratch` also refits from the seed's weights at the
full budget (what `refit.start: scratch` did) for the side by side. Prints the metrics and seconds and
writes reports/refit-check.json. A refit that is worse on these photos than the model it started from
would be a refit not worth serving.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from pipeline.core.atomic import write_text
from pipeline.core.config import load_params
from pipeline.core.data import PARTS, load_parts, merge_parts, on_served_scale
from pipeline.core.execution import Execution, resolve, select_device
from pipeline.core.fit import fit
from pipeline.core.metrics import compute_metrics
from pipeline.core.model import make_bundle
from pipeline.stages.evaluate import score_test
from pipeline.stages.refit import recipe, refit_config, starting_net

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = {"gender": ("accuracy",), "rating": ("pearson", "mae", "rmse")}


def split_run(task: str) -> tuple[dict, dict]:
    """The split model's bundle and the split's parts on its rating scale, read once per task."""
    bundle = torch.load(ROOT / "models" / task / "model.pt", weights_only=True, map_location="cpu")
    maps = {k: tuple(v) for k, v in bundle.get("trained_on", {}).get("rating_scales", {}).items()}
    return bundle, on_served_scale(load_parts(ROOT / "data/ingested", ROOT / "data/split", PARTS), maps)


def refit_on_train_val(params, task: str, bundle: dict, parts: dict, start: str, fraction: float, out: Path) -> dict:
    """The split model's recipe refitted on train + val from `start`, for `fraction` of the budget (the
    learning rate params' from `split`, the recipe's own from `scratch`) -> its test metrics and seconds."""
    mcfg, heads = recipe(bundle)
    seen = merge_parts([parts["train"], parts["val"]])
    rc = dataclasses.replace(params.refit, start=start, fraction=fraction,
                             lr_scale=params.refit.lr_scale if start == "split" else 1.0)
    cfg = refit_config(getattr(params.train, task), len(parts["train"]), len(seen), rc)
    policy = resolve(Execution(params.train.precision, params.train.channels_last), select_device(params.train.device),
                     params.train.threads)
    policy.apply()
    net, origin = starting_net(mcfg, heads, cfg.seed, start, ROOT / "models" / task / "model.pt")
    t0 = time.time()
    res = fit(net, {"train": seen}, task, cfg, policy, origin=origin)
    seconds = time.time() - t0
    net.load_state_dict(res.best_state)
    torch.save(make_bundle(net, mcfg, heads, task, bundle["preprocess"], bundle["execution"], {}), out)
    return {"epochs": cfg.epochs, "lr": cfg.lr, "photos": len(seen), "seconds": round(seconds, 1),
            **scored(task, out, parts["test"], params)}


def scored(task: str, path: Path, test, params) -> dict:
    pred, _ = score_test(task, path, test, params.evaluate)
    m = compute_metrics(task, test.targets(task).numpy(), pred)
    return {k: round(float(m[k]), 4) for k in HEADLINE[task]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scratch", action="store_true", help="also refit from the seed's weights, full budget")
    ap.add_argument("--tasks", nargs="+", default=["gender", "rating"])
    ap.add_argument("--fractions", nargs="+", type=float, help="refit.fraction values to try (default: params')")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            bundle, parts = split_run(task)
            out[task] = {"split model (train)": scored(task, ROOT / "models" / task / "model.pt", parts["test"], params)}
            tries = [("split", f) for f in args.fractions or [params.refit.fraction]]
            for start, fraction in tries + ([("scratch", 1.0)] if args.scratch else []):
                row = refit_on_train_val(params, task, bundle, parts, start, fraction, Path(tmp) / f"{task}-{start}.pt")
                out[task][f"refit from {start} x{fraction:g} (train + val)"] = row
                print(task, start, fraction, row, flush=True)
    for task, rows in out.items():
        for name, row in rows.items():
            print(f"{task:<7} {name:<38} " + "  ".join(f"{k} {row[k]:.4f}" for k in HEADLINE[task])
                  + (f"  ({row['epochs']} epochs, lr {row['lr']:.5f}, {row['seconds']:.0f} s)" if "epochs" in row else ""))
    (ROOT / "reports").mkdir(exist_ok=True)
    write_text(ROOT / "reports" / "refit-check.json", json.dumps({"refit": dataclasses.asdict(params.refit),
                                                                  "tasks": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
