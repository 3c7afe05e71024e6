"""Train stage: one CNN per task (gender classifier, rating regressor), early-stopped on validation.

    python -m pipeline.train --task gender --data data/ingested --split data/split --out models/gender

Writes `<out>/model.pt` (state_dict + config, loads with `torch.load(weights_only=True)`),
`<out>/history.json` (per-epoch curves, DVC plots), `<out>/run.json` (the MLflow run that the
evaluate stage continues) and `<out>/checkpoint.pt` after every epoch: an interrupted run resumes
from it when the config and data are unchanged, and starts over otherwise.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from pipeline import data as data_module
from pipeline import execution as execution_module
from pipeline import model as model_module
from pipeline.atomic import atomic_path, write_text
from pipeline.config import TaskConfig
from pipeline.data import Augment, Part, augment, batches, load_parts
from pipeline.execution import Execution, Policy, policy_dict, resolve, select_device
from pipeline.metrics import MAIN_METRIC, compute_metrics
from pipeline.model import ModelConfig, TaskModel, build_model, count_params, predict
from pipeline.preprocess import crop_contract

LOSSES = {"cross_entropy": nn.CrossEntropyLoss(), "l1": nn.L1Loss(), "huber": nn.HuberLoss(delta=0.5),
          "mse": nn.MSELoss()}


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_metric: float
    history: list[dict] = field(default_factory=list)
    finished: bool = True              # False when stopped by `stop_after` (an interruption)


def init_model(mcfg: ModelConfig, heads: list[str], seed: int) -> nn.Module:
    """Builds the network with seeded initial weights (the run's seed decides them, not the process)."""
    torch.manual_seed(seed)
    return build_model(mcfg, heads)


def _loss_fns(task: str, cfg: TaskConfig) -> dict[str, tuple[nn.Module, float]]:
    """Per head: (loss, weight). Classification heads use cross-entropy; rating uses cfg.loss."""
    if (task == "gender") != (cfg.loss == "cross_entropy"):
        raise ValueError(f"train.{task}.loss={cfg.loss} does not fit the task")
    out = {task: (LOSSES[cfg.loss], 1.0)}
    for aux in cfg.aux_tasks:
        out[aux] = (LOSSES["huber" if aux == "rating" else "cross_entropy"], cfg.aux_weight)
    return out


def fingerprint(cfg: TaskConfig, parts: dict[str, Part], heads: list[str], policy: Policy) -> str:
    """Identifies config + data + the training code + how it runs (device, precision, memory format:
    each changes the numbers); a checkpoint is resumed only when this matches."""
    code = [Path(m.__file__).read_text() for m in (sys.modules[__name__], data_module, model_module,
                                                   execution_module)]
    how = {k: v for k, v in policy.describe().items() if k != "threads"}
    key = json.dumps([dataclasses.asdict(cfg), heads, {p: list(v.meta["filename"]) for p, v in parts.items()},
                      parts["train"].images.shape, code, how], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _schedule(cfg: TaskConfig, opt: torch.optim.Optimizer, steps: int):
    if cfg.schedule == "onecycle":
        # warm up for a quarter of the steps (at least 2, or OneCycle divides by zero on tiny runs)
        warm = min(0.5, max(0.25, 2 / steps))
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=warm)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)


def _ema(net: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of the weights (and BN statistics), or None when decay is 0.
    Validation judges the average: at a high learning rate the raw weights jump between epochs."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_step(net, x: torch.Tensor, targets: dict[str, torch.Tensor], losses, opt, sched, policy: Policy,
               ema=None) -> torch.Tensor:
    """One optimizer step on an augmented batch x (B, 3, S, S) -> the loss (a 0-d tensor, not yet
    synchronised: reading it is the caller's choice). The step bench/train.py times."""
    x = policy.input(x)                                           # channels_last where the policy says
    with policy.autocast():                                       # bf16 convolutions where native
        out = net(x)
        loss = sum(w * fn(out[h].float(), targets[h].to(policy.device)) for h, (fn, w) in losses.items())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    if ema is not None:
        ema.update_parameters(net)
    return loss.detach()


def _train_epoch(net, part, cfg, losses, opt, sched, gen, policy: Policy, desc, ema=None) -> float:
    net.train()
    targets = {h: part.targets(h) for h in losses}
    aug = Augment(**dataclasses.asdict(cfg.augment))
    total, seen = 0.0, 0
    bar = tqdm(batches(part, cfg.batch_size, gen), total=-(-len(part) // cfg.batch_size), desc=desc, leave=False, disable=None)
    for idx, x in bar:
        loss = train_step(net, augment(x, aug, gen), {h: t[idx] for h, t in targets.items()}, losses, opt, sched,
                          policy, ema)
        total += loss.item() * len(idx)
        seen += len(idx)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total / seen


def _save_checkpoint(path: Path, fp: str, net, opt, sched, gen, state: dict, finished: bool = False,
                     ema=None) -> None:
    """Everything a resumed run needs to continue bit for bit (weights, their average, optimizer, LR
    schedule, RNGs); `finished` marks a run that ended normally, which the next run does not resume."""
    with atomic_path(path) as tmp:          # a kill mid-save keeps the previous epoch's checkpoint
        torch.save({"fingerprint": fp, "model": net.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "gen": gen.get_state(), "rng": torch.get_rng_state(),
                    "state": state, "finished": finished, "ema": ema.state_dict() if ema is not None else None}, tmp)


def _read_checkpoint(path: Path | None, device: torch.device) -> dict | None:
    """The checkpoint at `path`, or None when there is none or it cannot be read (truncated or
    corrupt, e.g. written by a process killed mid-save before saves were atomic): reported, and
    training starts over instead of failing on every later run."""
    if path is None or not path.is_file():
        return None
    try:
        ck = torch.load(path, weights_only=True, map_location=device)
        if not isinstance(ck, dict) or "fingerprint" not in ck:
            raise ValueError("not a training checkpoint")
        return ck
    except Exception as e:  # noqa: BLE001 - zip, pickle and shape errors all mean "unusable"
        print(f"train: checkpoint {path} is unreadable ({type(e).__name__}: {str(e)[:120]}); starting over",
              file=sys.stderr)
        return None


def fit(net: nn.Module, parts: dict[str, Part], task: str, cfg: TaskConfig, policy: Policy,
        checkpoint: Path | None = None, on_epoch: Callable[[dict], None] | None = None,
        stop_after: int | None = None) -> FitResult:
    """Trains `net` (heads: task + cfg.aux_tasks) on parts['train'], early-stopping on parts['val'].

    Args:
        policy: device, precision and memory format (pipeline/execution.py).
        checkpoint: saved after every epoch and resumed from when its fingerprint matches.
        on_epoch: called with each epoch's record (the stage logs it to MLflow).
        stop_after: stop after this many epochs of this call, as an interruption would (tests).
    """
    torch.manual_seed(cfg.seed)
    losses = _loss_fns(task, cfg)
    device = policy.device
    policy.model(net)                                             # before the optimizer takes its parameters
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(parts["train"]) // cfg.batch_size)
    sched = _schedule(cfg, opt, steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    ema = _ema(net, cfg.ema)
    judged = ema.module if ema is not None else net               # what validation scores and we keep
    fp = fingerprint(cfg, parts, list(losses), policy)
    state = {"epoch": 0, "best_metric": -float("inf"), "best_epoch": 0, "bad": 0, "history": [],
             "best_state": copy.deepcopy(judged.state_dict())}
    ck = _read_checkpoint(checkpoint, device)
    if ck is not None:
        if ck["fingerprint"] == fp and not ck.get("finished"):     # only an interrupted run resumes
            net.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), sched.load_state_dict(ck["sched"])
            gen.set_state(ck["gen"]), torch.set_rng_state(ck["rng"])
            if ema is not None:
                ema.load_state_dict(ck["ema"])
            state = ck["state"]
    val_y = parts["val"].targets(task).numpy()
    ran = 0
    while state["epoch"] < cfg.epochs and state["bad"] < cfg.patience:
        t0 = time.time()
        epoch = state["epoch"] + 1
        loss = _train_epoch(net, parts["train"], cfg, losses, opt, sched, gen, policy, f"{task} epoch {epoch}", ema)
        pred = predict(TaskModel(judged, task), parts["val"].images, policy=policy)
        metric = compute_metrics(task, val_y, pred)[MAIN_METRIC[task]]
        record = {"epoch": epoch, "train_loss": loss, f"val_{MAIN_METRIC[task]}": metric,
                  "lr": sched.get_last_lr()[0], "seconds": time.time() - t0}
        if metric > state["best_metric"]:
            state.update(best_metric=metric, best_epoch=epoch, bad=0, best_state=copy.deepcopy(judged.state_dict()))
        else:
            state["bad"] += 1
        state["epoch"] = epoch
        state["history"].append(record)
        print(f"{task} epoch {epoch:3d}  loss {loss:.4f}  val {MAIN_METRIC[task]} {metric:.4f}  "
              f"({record['seconds']:.1f} s)" + ("  *best" if state["best_epoch"] == epoch else ""))
        if on_epoch:
            on_epoch(record)
        if checkpoint:
            _save_checkpoint(checkpoint, fp, net, opt, sched, gen, state, ema=ema)
        ran += 1
        if stop_after is not None and ran >= stop_after and state["epoch"] < cfg.epochs:
            return FitResult(state["best_state"], state["best_epoch"], state["best_metric"], state["history"], False)
    if checkpoint:
        _save_checkpoint(checkpoint, fp, net, opt, sched, gen, state, finished=True, ema=ema)
    return FitResult(state["best_state"], state["best_epoch"], state["best_metric"], state["history"])


def main() -> None:
    ap = argparse.ArgumentParser(description="Train one task's CNN")
    ap.add_argument("--task", required=True, choices=["gender", "rating"])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--split", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline import tracking
    from pipeline.config import load_params

    params = load_params(args.params)
    cfg: TaskConfig = getattr(params.train, args.task)
    execution = Execution(params.train.precision, params.train.channels_last)
    policy = resolve(execution, select_device(params.train.device), params.train.threads)
    policy.apply_threads()
    parts = load_parts(args.data, args.split, ("train", "val"))
    heads = [args.task, *cfg.aux_tasks]
    mcfg = ModelConfig(cfg.arch, cfg.widths, cfg.dropout, params.ingest.image_size)
    net = init_model(mcfg, heads, cfg.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    tags = {"task": args.task, "arch": cfg.arch, "source": params.ingest.source, **policy.describe()}
    with tracking.stage_run(params, f"train-{args.task}", cfg, tags, system_metrics=True) as run_id:
        t0 = time.time()
        res = fit(net, parts, args.task, cfg, policy, args.out / "checkpoint.pt",
                  on_epoch=lambda r: tracking.log_metrics(r, step=r["epoch"]))
        net.load_state_dict(res.best_state)
        seconds = time.time() - t0
        net = net.cpu().to(memory_format=torch.contiguous_format)   # a plain NCHW float32 network on disk
        bundle = {"state_dict": net.state_dict(), "model_config": dataclasses.asdict(mcfg), "heads": heads,
                  "task": args.task, "preprocess": crop_contract(params.ingest.crop, params.ingest.face),
                  "execution": policy_dict(execution)}        # evaluate and the service run it this way
        with atomic_path(args.out / "model.pt") as tmp:
            torch.save(bundle, tmp)
        write_text(args.out / "history.json", json.dumps(res.history, indent=1) + "\n")
        tracking.log_metrics({"best_epoch": res.best_epoch, f"best_val_{MAIN_METRIC[args.task]}": res.best_metric,
                              "train_seconds": seconds, "params": count_params(net)})
        uri = tracking.log_torch_model(TaskModel(net.eval(), args.task), parts["val"].images[:2])
        tracking.log_artifacts([args.out / "model.pt"], "bundle")   # what package.py hands to BentoML
    run = {"run_id": run_id, "model_uri": uri, "train_seconds": round(seconds, 1)}
    write_text(args.out / "run.json", json.dumps(run) + "\n")
    print(f"train {args.task}: best val {MAIN_METRIC[args.task]} {res.best_metric:.4f} at epoch "
          f"{res.best_epoch}/{len(res.history)} in {seconds:.0f} s on {policy.device.type} "
          f"({policy.describe()['precision']}, {policy.describe()['memory_format']})")


if __name__ == "__main__":
    main()
