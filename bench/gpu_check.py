"""The GPU check: what the CUDA paths do on a real GPU, in one step (`make gpu-check`, <= 8 min on one GPU).

    python bench/gpu_check.py [--dry-run] [--out reports/gpu-check.json]

Sections, each timed and each pass/fail, all in one JSON report (printed and written to --out):
1. device: name, compute capability, memory, torch / CUDA / cuDNN; what `precision: auto` resolves to
   (bf16 autocast where compute capability >= 8.0) and the TF32 flags in force for fp32 work.
2. train: both tasks' networks as profiles/scut-gpu.yaml configures them, through core.fit on the
   device at a tiny budget (2 epochs of 256 photos): the loss is finite and falls.
3. ddp: the data-parallel path through torchrun with the gloo+NCCL process group. With >= 2 GPUs,
   tests/ddp_fit.py on 2 GPUs against 1 (the loss curves agree). With one GPU (NCCL refuses two ranks
   on one device) a world of one with the same group: the loss mean and metric broadcast as CUDA
   tensors over NCCL, the checkpoint and fingerprints as objects over gloo, DDP's wrapper for steps.
4. profile: the GPU profile's first epochs timed on photos of its shape (2 epochs of 2307 at 128 px
   per task; the real photos are not on a lent machine): s/epoch and photos/s, bf16 against fp32 per
   step. These replace the "assumed" GPU figures of docs/scaling-out.md once measured.
5. resume: the rating net (dropout on: it draws from the CUDA RNG) trained 3 epochs straight, and 1 epoch,
   stopped, then resumed from its checkpoint for 2: the loss curves agree (the checkpoint carries the
   CUDA RNG state; cuDNN's kernels may differ in the last bits, so within 1 %).
6. export: a network trained on the GPU, saved as a bundle, served on the CPU (core.model.serving_model,
   as the service loads it): its answers agree with the GPU's within bf16 rounding.

--dry-run runs every section on the CPU (gloo, sizes cut), so the script is proven before a GPU is lent;
tests/bench/test_gpu_check.py runs it so in CI.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core import distributed  # noqa: E402
from pipeline.core.config import load_params  # noqa: E402
from pipeline.core.data import Part  # noqa: E402
from pipeline.core.execution import Execution, bf16_native, resolve  # noqa: E402
from pipeline.core.fit import fit, init_model  # noqa: E402
from pipeline.core.model import ModelConfig, TaskModel, make_bundle, predict, serving_model  # noqa: E402
from pipeline.core.tasks import GROUPS  # noqa: E402


def photos(n: int, size: int, seed: int = 0) -> Part:
    """Photos of the profile's shape whose brightness carries the rating (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    rating = rng.uniform(1, 5, n)
    images = (rng.uniform(0, 1, (n, size, size, 3)) * 128 + rating[:, None, None, None] * 25).astype(np.uint8)
    meta = pd.DataFrame({"filename": [f"p{i}.jpg" for i in range(n)], "rating": rating,
                         "gender": np.where(rating > 3, "m", "f"), "group": [GROUPS[i % 2 * 2] for i in range(n)]})
    return Part(images, meta)


def profile_configs() -> tuple[dict, int]:
    """profiles/scut-gpu.yaml's task configs and image size (its data path need not exist here)."""
    import yaml

    base, over = load_params(ROOT / "params.yaml"), yaml.safe_load((ROOT / "profiles/scut-gpu.yaml").read_text())
    cfgs = {t: dataclasses.replace(getattr(base.train, t), **{k: tuple(v) if isinstance(v, list) else v
                                                              for k, v in over["train"][t].items()})
            for t in ("gender", "rating")}
    return cfgs, over["ingest"]["image_size"]


def section_device(device: torch.device) -> dict:
    policy = resolve(Execution("auto", True), device)
    policy.apply()                                  # the flags as train, evaluate and serve set them
    out = {"device": str(device), "torch": torch.__version__, "auto_precision": policy.describe()["precision"],
           "bf16_native": bf16_native(device), "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
           "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out |= {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        out["ok"] = ((p.major >= 8) == (out["auto_precision"] == "bf16")    # auto picks bf16 exactly where native
                     and not out["tf32_matmul"] and not out["tf32_cudnn"])
    else:
        out["ok"] = True
    return out


def _fit(task: str, cfg, size: int, n: int, epochs: int, device: torch.device, precision: str = "auto"):
    cfg = dataclasses.replace(cfg, epochs=epochs, patience=epochs, select="last", ema=0.0)
    net = init_model(ModelConfig(cfg.arch, cfg.widths, cfg.dropout, size), [task, *cfg.aux_tasks], cfg.seed)
    policy = resolve(Execution(precision, True), device)
    parts = {"train": photos(n, size), "val": photos(max(32, n // 8), size, seed=1)}
    t0 = time.perf_counter()
    res = fit(net, parts, task, cfg, policy)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return net, res, time.perf_counter() - t0, parts, policy


def section_train(device: torch.device, cfgs: dict, size: int) -> dict:
    out = {}
    for task, cfg in cfgs.items():
        _, res, secs, _, _ = _fit(task, cfg, size, 256, 2, device)
        losses = [h["train_loss"] for h in res.history]
        out[task] = {"losses": [round(v, 4) for v in losses], "seconds": round(secs, 1),
                     "ok": all(np.isfinite(losses)) and losses[-1] < losses[0]}
    out["ok"] = all(v["ok"] for v in out.values() if isinstance(v, dict))
    return out


def ddp_worker(device_type: str) -> None:
    """Under torchrun, one process: a world of one with the training group; every collective fit uses."""
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(distributed.backend(device))
    two = distributed.World(0, 2)            # past the one-process shortcut: the real call on the device
    got = {"mean": distributed.mean(6.0, 3, two, device), "broadcast": distributed.broadcast(0.25, two, device)}
    box = [{"fingerprint": "ab12", "weights": torch.ones(2)}]
    torch.distributed.broadcast_object_list(box, src=0)      # how checkpoint.agreed sends (CPU, gloo)
    seen: list = [None]
    torch.distributed.all_gather_object(seen, "ab12")        # how distributed.agree compares
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(1)).to(device)
    net(torch.zeros(1, 3, 16, 16, device=device))
    ddp = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        ddp(torch.randn(4, 3, 16, 16, device=device)).pow(2).mean().backward()
        opt.step()
    got |= {"object_ok": seen == ["ab12"] and bool(box[0]["weights"].sum() == 2), "ddp_steps": 3,
            "backend": torch.distributed.get_backend()}
    print("DDP_RESULT " + json.dumps(got), flush=True)
    torch.distributed.destroy_process_group()


def section_ddp(device: torch.device) -> dict:
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    if gpus >= 2:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "DDP_FIT_DEVICE": "cuda"}
            for n, out in ((1, "one"), (2, "two")):
                subprocess.run([*run, f"--nproc-per-node={n}", str(ROOT / "tests/ddp_fit.py"), f"{tmp}/{out}", "course"],
                               check=True, env=env, capture_output=True, timeout=300)
            one, two = (torch.load(f"{tmp}/{d}/course.pt", weights_only=True) for d in ("one", "two"))
            l1, l2 = ([h["train_loss"] for h in r["history"]] for r in (one, two))
            return {"processes": 2, "losses_one": l1, "losses_two": l2,
                    "ok": bool(np.allclose(l1, l2, rtol=1e-3))}
    p = subprocess.run([*run, "--nproc-per-node=1", __file__, "--ddp-worker", device.type], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("DDP_RESULT ")), None)
    if line is None:
        return {"ok": False, "error": (p.stdout + p.stderr)[-1500:]}
    got = json.loads(line[len("DDP_RESULT "):])
    got["ok"] = got["mean"] == 2.0 and got["broadcast"] == 0.25 and got["object_ok"]
    return {"processes": 1, **got}


def section_profile(device: torch.device, cfgs: dict, size: int, dry: bool) -> dict:
    n, epochs = (256, 1) if dry else (2307, 2)
    out = {}
    for task, cfg in cfgs.items():
        _, res, secs, _, policy = _fit(task, cfg, size, n, epochs, device)
        per = [h["seconds"] for h in res.history]
        out[task] = {"photos": n, "epochs": epochs, "seconds_per_epoch": [round(s, 2) for s in per],
                     "photos_per_s": round(n / min(per), 1), "precision": policy.describe()["precision"],
                     "full_profile_min": round(cfg.epochs * min(per) / 60, 1)}   # the profile's epochs at this pace
    if device.type == "cuda":                                                   # one step, bf16 against fp32
        cfg = cfgs["rating"]
        steps = {}
        for precision in ("bf16", "fp32"):
            _, res, _, _, _ = _fit("rating", cfg, size, 512, 2, device, precision)
            steps[precision] = round(res.history[-1]["seconds"] / (512 / cfg.batch_size) * 1000, 2)
        out["ms_per_step"] = steps
    out["ok"] = True
    return out


def section_resume(device: torch.device, cfgs: dict, size: int) -> dict:
    cfg = dataclasses.replace(cfgs["rating"], epochs=3, patience=3, select="last", ema=0.0)
    heads, parts = ["rating", *cfg.aux_tasks], {"train": photos(256, size), "val": photos(64, size, seed=1)}
    policy = resolve(Execution("auto", True), device)
    curves = []
    with tempfile.TemporaryDirectory() as tmp:
        for stops in ([None], [1, None]):                      # straight through; stopped after epoch 1, resumed
            ck = Path(tmp) / f"ck{len(stops)}.pt"
            for stop in stops:
                net = init_model(ModelConfig(cfg.arch, cfg.widths, cfg.dropout, size), heads, cfg.seed)
                res = fit(net, parts, "rating", cfg, policy, checkpoint=ck, stop_after=stop)
            curves.append([round(h["train_loss"], 5) for h in res.history])
    ok = len(curves[1]) == 3 and bool(np.allclose(curves[0], curves[1], rtol=0.01))
    return {"straight": curves[0], "resumed": curves[1], "dropout": cfg.dropout, "ok": ok}


def section_export(device: torch.device, cfgs: dict, size: int) -> dict:
    cfg = cfgs["gender"]
    net, _, _, parts, policy = _fit("gender", cfg, size, 256, 1, device)
    heads = ["gender", *cfg.aux_tasks]
    trained = predict(TaskModel(net.eval(), "gender"), parts["val"].images, policy=policy)
    bundle = make_bundle(net, ModelConfig(cfg.arch, cfg.widths, cfg.dropout, size), heads, "gender",
                         {"crop": "center"}, dataclasses.asdict(Execution("auto", True)), {"parts": ["train"]})
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(bundle, f"{tmp}/model.pt")
        served, cpu_policy = serving_model(f"{tmp}/model.pt", "gender", device="cpu")
        on_cpu = predict(served, parts["val"].images, policy=cpu_policy)
    diff = float(np.max(np.abs(np.asarray(on_cpu) - np.asarray(trained))))
    return {"served_on": str(cpu_policy.device), "cpu_precision": cpu_policy.describe()["precision"],
            "max_probability_difference": round(diff, 4), "ok": diff < 0.05}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="every section on the CPU, sizes cut")
    ap.add_argument("--out", type=Path, default=ROOT / "reports/gpu-check.json")
    ap.add_argument("--ddp-worker", choices=["cpu", "cuda"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ddp_worker:
        return ddp_worker(args.ddp_worker)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu-check: no CUDA device here; `--dry-run` runs the same sections on the CPU")
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", 0)
    cfgs, size = profile_configs()
    if args.dry_run:
        size, cfgs = 32, {t: dataclasses.replace(c, widths=tuple(w // 4 for w in c.widths)) for t, c in cfgs.items()}
    report: dict = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.perf_counter()
    for name, fn in (("device", lambda: section_device(device)), ("train", lambda: section_train(device, cfgs, size)),
                     ("ddp", lambda: section_ddp(device)), ("profile", lambda: section_profile(device, cfgs, size, args.dry_run)),
                     ("resume", lambda: section_resume(device, cfgs, size)),
                     ("export", lambda: section_export(device, cfgs, size))):
        s = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # noqa: BLE001 - a failed section is reported, the others still run
            report[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:1500]}
        report[name]["section_seconds"] = round(time.perf_counter() - s, 1)
        print(f"gpu-check {name}: {'ok' if report[name]['ok'] else 'FAILED'} ({report[name]['section_seconds']} s)", flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["ok"] = all(report[k]["ok"] for k in ("device", "train", "ddp", "profile", "resume", "export"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps(report, indent=1, default=str))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
