"""Train stage: one CNN per task (gender classifier, rating regressor) on the split's train part,
validated on its val part; the evaluate stage scores it on the test part.

    python -m pipeline.stages.train --task gender --data data/ingested --split data/split --out models/gender

Writes `<out>/model.pt` (state_dict + config, loads with `torch.load(weights_only=True)`),
`<out>/history.json` (per-epoch curves, DVC plots), `<out>/run.json` (the MLflow run that the
evaluate and refit stages continue) and `<out>/checkpoint.pt` after every epoch: an interrupted run
resumes from it when the config and data are unchanged, and starts over otherwise (pipeline/core/fit.py).

With `train.nproc > 1` the command re-executes itself under `torchrun --standalone` as that many
data-parallel processes (pipeline/core/distributed.py); rank 0 alone logs to MLflow and writes the files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from pipeline.core import distributed, scales
from pipeline.core.atomic import atomic_path, write_text
from pipeline.core.config import TaskConfig
from pipeline.core.data import load_parts, on_served_scale
from pipeline.core.execution import Execution, policy_dict, resolve, select_device
from pipeline.core.fit import fit, init_model
from pipeline.core.metrics import MAIN_METRIC
from pipeline.core.model import ModelConfig, TaskModel, count_params, make_bundle
from pipeline.core.preprocess import crop_contract
from pipeline.core.tasks import SERVED


def main() -> None:
    ap = argparse.ArgumentParser(description="Train one task's CNN")
    ap.add_argument("--task", required=True, choices=SERVED)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--split", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline.core.config import load_params

    params = load_params(args.params)
    if params.train.nproc > 1 and not distributed.under_torchrun():      # dvc repro's command, nproc > 1
        os.execv(sys.executable, distributed.torchrun_argv(params.train.nproc, "pipeline.stages.train", sys.argv[1:]))
    try:
        _train(args, params)
    finally:
        distributed.shutdown()


def _device(pref: str, w: distributed.World) -> torch.device:
    """The device of this rank: its own GPU (LOCAL_RANK) under torchrun on CUDA."""
    device = select_device(pref)
    distributed.check_devices(device, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if device.type == "cuda" and w.size > 1:
        device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    return device


def _train(args, params) -> None:
    from pipeline import tracking

    cfg: TaskConfig = getattr(params.train, args.task)
    execution = Execution(params.train.precision, params.train.channels_last)
    w = distributed.world()
    # each rank takes its share of the cores (2 ranks on 2 cores: 1 thread each)
    policy = resolve(execution, _device(params.train.device, w), params.train.threads,
                     workers=int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    policy.apply()
    w = distributed.init(policy.device)
    parts = load_parts(args.data, args.split, ("train", "val"))
    # every source's ratings on the served scale, by a map fitted on the training part (pipeline/core/scales.py)
    maps = scales.fit_maps(parts["train"].meta, params.ingest.sources) if "source" in parts["train"].meta else {}
    parts = on_served_scale(parts, maps)
    heads = [args.task, *cfg.aux_tasks]
    mcfg = ModelConfig(cfg.arch, cfg.widths, cfg.dropout, params.ingest.image_size)
    net = init_model(mcfg, heads, cfg.seed)
    if not w.main:                      # a helper rank: its slice of every batch, no files, no MLflow
        fit(net, parts, args.task, cfg, policy, args.out / "checkpoint.pt", w=w)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    tags = {"task": args.task, "arch": cfg.arch, "source": params.ingest.dataset, **policy.describe(),
            "processes": str(w.size)}
    with tracking.stage_run(params, f"train-{args.task}", cfg, tags, system_metrics=True) as run_id:
        t0 = time.time()
        res = fit(net, parts, args.task, cfg, policy, args.out / "checkpoint.pt",
                  on_epoch=lambda r: tracking.log_metrics(r, step=r["epoch"]), w=w)
        net.load_state_dict(res.best_state)
        seconds = time.time() - t0
        trained_on = {"parts": ["train"], "photos": len(parts["train"]), "epochs": len(res.history),
                      "kept_epoch": res.best_epoch, "rating_scales": {k: list(v) for k, v in maps.items()}}
        bundle = make_bundle(net, mcfg, heads, args.task, crop_contract(params.ingest.crop, params.ingest.face),
                             policy_dict(execution), trained_on)   # evaluate and the service run it so
        with atomic_path(args.out / "model.pt") as tmp:
            torch.save(bundle, tmp)
        write_text(args.out / "history.json", json.dumps(res.history, indent=1) + "\n")
        tracking.log_metrics({"best_epoch": res.best_epoch, f"best_val_{MAIN_METRIC[args.task]}": res.best_metric,
                              "train_seconds": seconds, "params": count_params(net)})
        uri = tracking.log_torch_model(TaskModel(net.eval(), args.task), parts["val"].images[:2])
        tracking.log_artifacts([args.out / "model.pt"], "bundle")   # what package.py hands to BentoML
    run = {"run_id": run_id, "model_uri": uri, "train_seconds": round(seconds, 1)}
    write_text(args.out / "run.json", json.dumps(run) + "\n")
    print(f"train {args.task} ({w.size} process{'es' if w.size > 1 else ''}): kept val {MAIN_METRIC[args.task]} {res.best_metric:.4f} at epoch "
          f"{res.best_epoch}/{len(res.history)} (select {cfg.select}) in {seconds:.0f} s on {policy.device.type} "
          f"({policy.describe()['precision']}, {policy.describe()['memory_format']})")


if __name__ == "__main__":
    main()
