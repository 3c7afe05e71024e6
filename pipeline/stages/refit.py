"""Refit stage: the train stage's recipe retrained on every photo (train + val + test) -> the served model.

    python -m pipeline.stages.refit --task rating --model models/rating --data data/ingested --split data/split

The split model (train stage) is what evaluate scores on the test part and what the registry compares:
its test metrics are the honest estimate of the recipe. A final model that learnt from all the photos
is the better one to serve (30 % more faces), and it cannot be tested here: it has seen them all.
So this stage retrains the same config and seed on every row of the split, with no validation part
(a fixed schedule; the last epoch's weights, as `select: last` keeps in the split run), and logs the
weights as `final/final.pt` in the split model's MLflow run; `package` serves that file when the
champion's run has one. It runs after evaluate, and only for a model that became the champion (a
model that lost the gate is never served, so its refit would be wasted). `refit.budget: steps` keeps the split run's number of optimizer steps
(epochs x train photos / all photos), so a refit costs what the split run cost. `refit.start: split`
reuses the split run instead: the refit starts from the split model's weights and fine-tunes them on
every photo for `refit.fraction` of that budget at `refit.lr_scale` of the peak learning rate
(profiles/scut.yaml: an eighth at 0.2; measured in docs/speed.md).

Writes `<model>/final.pt` (the weights to serve: the refit, or a copy of `model.pt` when
`refit.enabled` is false), `<model>/final.json` (what was done), `<model>/final_history.json` and
`<model>/final_checkpoint.pt` while it runs (a killed refit resumes from it, like the train stage;
removed when the refit is done, so it is not a DVC output).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from pipeline.core.atomic import atomic_path, sha256_file, write_text
from pipeline.core.config import RefitConfig, TaskConfig
from pipeline.core.data import PARTS, load_parts, merge_parts, on_served_scale
from pipeline.core.execution import Execution, policy_dict, resolve, select_device
from pipeline.core.fit import fit, init_model
from pipeline.core.model import ModelConfig, make_bundle
from pipeline.core.tasks import SERVED


def refit_config(cfg: TaskConfig, n_train: int, n_all: int, rc: RefitConfig) -> TaskConfig:
    """The split run's config for a run on `n_all` photos: the same steps (or epochs) times
    `rc.fraction`, at `rc.lr_scale` times its peak learning rate, every epoch run, the last one kept."""
    epochs = cfg.epochs if rc.budget == "epochs" else cfg.epochs * n_train / n_all
    epochs = max(1, round(epochs * rc.fraction))
    # progressive resizing: a refit from scratch shrinks the same share of its epochs; a fine-tune of the
    # split model (already past its small epochs) trains at the served size only
    small = min(round(cfg.small_epochs * epochs / cfg.epochs), epochs - 1) if rc.start == "scratch" else 0
    return dataclasses.replace(cfg, epochs=epochs, patience=epochs, select="last", lr=cfg.lr * rc.lr_scale,
                               small_epochs=small, small_size=cfg.small_size if small else 0)


def recipe(bundle: dict) -> tuple[ModelConfig, list[str]]:
    """The split model's network and heads, read from its bundle: the refit retrains exactly the recipe
    that was estimated (one carrier; the crop and the rating map come from the same bundle)."""
    cfg = dict(bundle["model_config"])
    return ModelConfig(**{**cfg, "widths": tuple(cfg["widths"])}), list(bundle["heads"])


def starting_net(mcfg: ModelConfig, heads: list[str], seed: int, start: str, split_model: Path
                 ) -> tuple[torch.nn.Module, str]:
    """-> (the network the refit starts from, its origin for the checkpoint's fingerprint): the
    recipe's seeded initial weights (`scratch`), or the split model's trained ones (`split`: a
    fine-tune of what the split run learnt instead of learning it again)."""
    net = init_model(mcfg, heads, seed)
    if start == "scratch":
        return net, ""
    net.load_state_dict(torch.load(split_model, weights_only=True, map_location="cpu")["state_dict"])
    return net, "split:" + sha256_file(split_model)   # a checkpoint resumes only from the same start


def keep_split_model(model_dir: Path, why: str) -> None:
    """No refit (off, or the split model is not the champion) -> final.pt is a copy of model.pt."""
    with atomic_path(model_dir / "final.pt") as tmp:
        shutil.copyfile(model_dir / "model.pt", tmp)
    (model_dir / "final_checkpoint.pt").unlink(missing_ok=True)
    write_text(model_dir / "final_history.json", "[]\n")
    write_text(model_dir / "final.json", json.dumps({"enabled": False, "weights": "split", "why": why}) + "\n")


def refit(params, task: str, model_dir: Path, data: Path, split: Path) -> dict:
    """Retrains `task`'s recipe on every photo of the split, logs it into the split model's MLflow run
    -> what final.json says."""
    from pipeline import tracking

    cfg: TaskConfig = getattr(params.train, task)
    execution = Execution(params.train.precision, params.train.channels_last)
    policy = resolve(execution, select_device(params.train.device), params.train.threads)
    policy.apply()
    split_bundle = torch.load(model_dir / "model.pt", weights_only=True, map_location="cpu")
    mcfg, heads = recipe(split_bundle)
    maps = {k: tuple(v) for k, v in split_bundle.get("trained_on", {}).get("rating_scales", {}).items()}
    parts = on_served_scale(load_parts(data, split, PARTS), maps)      # the split run's map (its training part)
    every = {"train": merge_parts([parts[p] for p in PARTS])}      # no "val": nothing to choose by
    rcfg = refit_config(cfg, len(parts["train"]), len(every["train"]), params.refit)
    run_id = json.loads((model_dir / "run.json").read_text())["run_id"]
    net, start = starting_net(mcfg, heads, cfg.seed, params.refit.start, model_dir / "model.pt")
    out, ck = model_dir / "final.pt", model_dir / "final_checkpoint.pt"
    with tracking.continue_run(params, run_id):
        t0 = time.time()
        res = fit(net, every, task, rcfg, policy, ck, origin=start,
                  on_epoch=lambda r: tracking.log_metrics({f"refit_{k}": v for k, v in r.items()}, step=r["epoch"]))
        net.load_state_dict(res.best_state)
        seconds = time.time() - t0
        trained_on = {"parts": list(PARTS), "photos": len(every["train"]), "epochs": rcfg.epochs,
                      "kept_epoch": res.best_epoch, "refit_of": run_id, "start": params.refit.start,
                      "rating_scales": {k: list(v) for k, v in maps.items()}}
        with atomic_path(out) as tmp:
            torch.save(make_bundle(net, mcfg, heads, task, split_bundle["preprocess"], policy_dict(execution),
                                   trained_on), tmp)
        write_text(model_dir / "final_history.json", json.dumps(res.history, indent=1) + "\n")
        tracking.log_metrics({"refit_seconds": seconds, "refit_photos": len(every["train"]),
                              "refit_epochs": rcfg.epochs})
        tracking.set_tags({"refit": "true"})
        tracking.log_artifacts([out, model_dir / "final_history.json"], "final")   # package serves final/final.pt
    ck.unlink(missing_ok=True)
    return {"enabled": True, "weights": "refit", "start": params.refit.start, "lr": rcfg.lr,
            "photos": len(every["train"]), "epochs": rcfg.epochs,
            "split_photos": len(parts["train"]), "split_epochs": cfg.epochs, "seconds": round(seconds, 1),
            "sha256": sha256_file(out), "run_id": run_id, "final_train_loss": res.history[-1]["train_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description="Retrain one task's recipe on every photo (the served model)")
    ap.add_argument("--task", required=True, choices=SERVED)
    ap.add_argument("--model", required=True, type=Path, help="the train stage's folder (model.pt, run.json)")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--split", required=True, type=Path)
    ap.add_argument("--metrics", required=True, type=Path, help="evaluate's metrics.json (the registry's decision)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline.core.config import load_params

    params = load_params(args.params)
    decision = json.loads(args.metrics.read_text())["registry"]
    if not params.refit.enabled:
        why = "refit.enabled: false"
    elif not decision["promoted"]:       # package serves the champion's own refit, not this recipe's
        why = f"v{decision['version']} is not the champion (v{decision['champion_version']} is)"
    else:
        why = ""
    if why:
        keep_split_model(args.model, why)
        print(f"refit {args.task}: not run ({why}); final.pt is the split model")
        return
    info = refit(params, args.task, args.model, args.data, args.split)
    write_text(args.model / "final.json", json.dumps(info, indent=1) + "\n")
    print(f"refit {args.task}: {info['epochs']} epochs from {info['start']} on all {info['photos']} photos in "
          f"{info['seconds']:.0f} s "
          f"(the split run: {info['split_epochs']} epochs on {info['split_photos']})")


if __name__ == "__main__":
    main()
