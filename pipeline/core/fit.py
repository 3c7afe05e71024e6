"""The training loop (core): one network, one task's loss plus its auxiliary heads, AdamW and a one-cycle
schedule, augmentation on tensors, an optional weight average, a checkpoint after every epoch.

Used by the train stage (on the split's train part, validated on its val part) and the refit stage
(on every photo, no validation); imports no stage and no tracking: progress goes to `on_epoch`.
`select` decides which weights a run keeps: the epoch best on validation, or the last one (a fixed
recipe, which is what a refit on all photos can reproduce: it has no validation part to choose by).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from pipeline.core import checkpoint as ckpt
from pipeline.core import data as data_module
from pipeline.core import distributed
from pipeline.core import execution as execution_module
from pipeline.core import model as model_module
from pipeline.core.config import TaskConfig
from pipeline.core.data import Augment, Part, augment, batch_indices, shrink
from pipeline.core.distributed import World
from pipeline.core.execution import Policy
from pipeline.core.metrics import MAIN_METRIC, compute_metrics
from pipeline.core.model import ModelConfig, TaskModel, build_model, predict
from pipeline.core.preprocess import to_tensor
from pipeline.core.tasks import TASKS

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
    out: dict[str, tuple[nn.Module, float]] = {task: (LOSSES[cfg.loss], 1.0)}
    for aux in cfg.aux_tasks:
        out[aux] = (LOSSES[TASKS[aux].aux_loss], cfg.aux_weight)
    return out


def fingerprint(cfg: TaskConfig, parts: dict[str, Part], heads: list[str], policy: Policy, processes: int = 1,
                origin: str = "") -> str:
    """Identifies config + data + the training code + how it runs (device, precision, memory format:
    each changes the numbers) + where the weights started (`origin`, "" for the seed's own init);
    a checkpoint is resumed only when this matches."""
    code = [Path(str(m.__file__)).read_text() for m in (sys.modules[__name__], data_module, model_module,
                                                   execution_module, ckpt)]
    how = {k: v for k, v in policy.describe().items() if k != "threads"} | {"processes": processes}
    key = json.dumps([dataclasses.asdict(cfg), heads, {p: list(v.meta["filename"]) for p, v in parts.items()},
                      parts["train"].images.shape, code, how] + ([origin] if origin else []), sort_keys=True,
                     default=str)
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
               ema=None, weight: float = 1.0) -> torch.Tensor:
    """One optimizer step on an augmented batch x (B, 3, S, S) -> the loss (a 0-d tensor, not yet
    synchronised: reading it is the caller's choice). The step bench/train.py times. `weight` scales
    the loss that is back-propagated (a data-parallel rank's share, distributed.shard)."""
    x = policy.input(x)                                           # channels_last where the policy says
    with policy.autocast():                                       # bf16 convolutions where native
        out = net(x)
        loss = sum(w * fn(out[h].float(), targets[h].to(policy.device)) for h, (fn, w) in losses.items())
    opt.zero_grad(set_to_none=True)
    (loss * weight if weight != 1.0 else loss).backward()
    opt.step()
    sched.step()
    if ema is not None:
        ema.update_parameters(net)
    return loss.detach()


def _train_epoch(net, part, cfg, losses, opt, sched, gen, policy: Policy, desc, ema=None, w: World | None = None,
                 size: int = 0) -> float:
    """One pass over `part` in global batches of cfg.batch_size -> the mean training loss. Under DDP
    every rank draws the same order and augmentation and trains on its slice of each batch. `size`
    (> 0): the augmented batches are shrunk to that side first (progressive resizing)."""
    w = w or World()
    net.train()
    targets = {h: part.targets(h) for h in losses}
    aug = Augment(**dataclasses.asdict(cfg.augment))
    total, seen = 0.0, 0
    bar = tqdm(batch_indices(len(part), cfg.batch_size, gen), total=-(-len(part) // cfg.batch_size), desc=desc,
               leave=False, disable=None if w.main else True)
    for idx in bar:
        pos, weight = distributed.shard(len(idx), w)
        rows = idx[pos]
        x = shrink(augment(to_tensor(part.images[rows.numpy()]), aug, gen, (len(idx), pos)), size)
        loss = train_step(net, x, {h: t[rows] for h, t in targets.items()}, losses, opt, sched, policy, ema, weight)
        if weight:
            total += loss.item() * len(rows)
            seen += len(rows)
            bar.set_postfix(loss=f"{total / seen:.4f}")
    return distributed.mean(total, seen, w, policy.device)


def _rank(metric: float) -> float:
    return -float("inf") if math.isnan(metric) else metric


def _report(task: str, record: dict, metric: float | None, kept: bool, on_epoch) -> None:
    shown = f"  val {MAIN_METRIC[task]} {metric:.4f}" if metric is not None else ""
    if metric is not None and math.isnan(metric):   # early (EMA) weights can give every photo one score
        shown = f"  val {MAIN_METRIC[task]} undefined (the same prediction for every photo; early epochs)"
    print(f"{task} epoch {record['epoch']:3d}  loss {record['train_loss']:.4f}{shown}  ({record['seconds']:.1f} s)"
          + ("  *kept" if kept else ""), flush=True)
    if on_epoch:
        on_epoch(record)


def fit(net: nn.Module, parts: dict[str, Part], task: str, cfg: TaskConfig, policy: Policy,
        checkpoint: Path | None = None, on_epoch: Callable[[dict], None] | None = None,
        stop_after: int | None = None, w: World | None = None, origin: str = "") -> FitResult:
    """Trains `net` (heads: task + cfg.aux_tasks) on parts['train'] and keeps the weights `cfg.select`
    names: the epoch best on parts['val'] (early-stopped after `patience` epochs without a better one)
    or the last epoch's. Without a 'val' part (a refit on every photo) nothing is validated and the
    last epoch's weights are kept.

    Args:
        policy: device, precision and memory format (pipeline/core/execution.py).
        checkpoint: saved after every epoch and resumed from when its fingerprint matches.
        on_epoch: called with each epoch's record (the stage logs it to MLflow).
        stop_after: stop after this many epochs of this call, as an interruption would (tests).
        w: this process's rank under torchrun (default: from the environment; one process: rank 0 of 1).
            Every rank trains its slice of each batch (DDP); only rank 0 validates, reports and saves.
        origin: what `net`'s weights start from when they are not the seed's init (a refit from the
            split model): part of the checkpoint's fingerprint.
    """
    w = w or distributed.world()
    torch.manual_seed(cfg.seed + w.rank)                          # dropout: each rank its own stream
    losses = _loss_fns(task, cfg)
    policy.model(net)                                             # before the optimizer takes its parameters
    net = distributed.sync_batchnorm(net, policy.device, w)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(parts["train"]) // cfg.batch_size)
    sched = _schedule(cfg, opt, steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    ema = _ema(net, cfg.ema)
    judged = ema.module if ema is not None else net               # what validation scores and we keep
    fp = fingerprint(cfg, parts, list(losses), policy, w.size, origin)
    distributed.agree(fp, "run fingerprint (params, data, code, precision)", w)
    held = {"net": net, "opt": opt, "sched": sched, "gen": gen, "ema": ema}
    state: dict[str, Any] = {"epoch": 0, "best_metric": -float("inf"), "best_epoch": 0, "bad": 0, "history": [],
             "best_state": copy.deepcopy(judged.state_dict())}
    ck = ckpt.agreed(checkpoint, fp, w)                           # the same one on every rank, or None
    if ck is not None:
        state = ckpt.restore(ck, held, w, policy.device)
    # wrapped after loading: DDP broadcasts rank 0's weights at construction, now the checkpoint's on every rank
    step_net = net if w.size == 1 else torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[policy.device.index] if policy.device.type == "cuda" else None)
    val = parts.get("val")
    keep_last = cfg.select == "last" or val is None
    ran = 0
    while state["epoch"] < cfg.epochs and state["bad"] < cfg.patience:
        t0 = time.time()
        epoch = state["epoch"] + 1
        size = cfg.small_size if epoch <= min(cfg.small_epochs, cfg.epochs - 1) else 0   # small first, never last
        loss = _train_epoch(step_net, parts["train"], cfg, losses, opt, sched, gen, policy, f"{task} epoch {epoch}",
                            ema, w, size)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": loss, "lr": sched.get_last_lr()[0],
                                  "train_px": size or parts["train"].images.shape[1]}   # the curve's jump at the switch
        metric, key = float("nan"), f"val_{MAIN_METRIC[task]}"
        if val is not None:
            record[key] = None                                    # null, not missing: DVC plots need every key
        # select: last needs no validation to choose: the curve's every k-th point (and the last) will do
        if val is not None and (epoch % cfg.val_every == 0 or epoch == cfg.epochs):   # rank 0 validates
            if w.main:
                pred = predict(TaskModel(judged, task), val.images, policy=policy)
                metric = compute_metrics(task, val.targets(task).numpy(), pred)[MAIN_METRIC[task]]
            metric = distributed.broadcast(metric, w, policy.device)
            record[key] = metric
        record["seconds"] = time.time() - t0
        # NaN (a constant prediction: no correlation) ranks below every number, and the first epoch is
        # always kept, so a NaN at every epoch cannot leave the untrained initial weights as "the best"
        if keep_last or _rank(metric) > _rank(state["best_metric"]) or state["best_epoch"] == 0:
            state.update(best_metric=metric, best_epoch=epoch, bad=0, best_state=copy.deepcopy(judged.state_dict()))
        else:
            state["bad"] += 1
        state["epoch"] = epoch
        state["history"].append(record)
        if w.main:
            _report(task, record, record.get(key), state["best_epoch"] == epoch, on_epoch)
        if checkpoint:                                            # every rank: their RNG states go in
            ckpt.save(checkpoint, fp, held, state, w, policy.device)
        ran += 1
        if stop_after is not None and ran >= stop_after and state["epoch"] < cfg.epochs:
            return FitResult(state["best_state"], state["best_epoch"], state["best_metric"], state["history"], False)
    if checkpoint:
        ckpt.save(checkpoint, fp, held, state, w, policy.device, finished=True)
    return FitResult(state["best_state"], state["best_epoch"], state["best_metric"], state["history"])
