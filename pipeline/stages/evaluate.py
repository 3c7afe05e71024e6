"""Evaluate stage: test-split metrics and plots per task, MLflow registration and the champion alias.

    python -m pipeline.stages.evaluate --task rating --model models/rating --data data/ingested \
        --split data/split --out reports/eval/rating

Gender: accuracy, ROC-AUC, confusion matrix, accuracy per group. Rating: MAE, RMSE, Pearson and
Spearman correlation (on the served 1-5 scale), Pearson and MAE per group. Populations: per source,
source x ethnicity and source x ethnicity x gender, each with a 95 % bootstrap interval, groups under
30 photos flagged, and the largest gap between groups; rating there on each source's own scale (the
bundle's map, pipeline/core/scales.py). Writes `metrics.json` (DVC metrics: the headline numbers, their
bootstrap intervals, the largest gaps and the registry's decision), `groups.json` (the per-group
numbers and the population rows), `predictions.csv`
(DVC plots: confusion / scatter), PNG plots and `report.md` (our numbers beside the SCUT-FBP5500
paper's). The model is registered as `<experiment>-<source>-<task>`; the alias `champion` moves to it
only when it beats the current champion re-scored on this very test split.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from pipeline.core import scales
from pipeline.core.atomic import atomic_path, sha256_file, write_text
from pipeline.core.data import load_parts, on_served_scale, read_names
from pipeline.core.layers import layer_table, to_markdown
from pipeline.core.metrics import (
    MAIN_METRIC,
    bootstrap_ci,
    compute_metrics,
    largest_gaps,
    population_metrics,
    population_rows,
    populations_markdown,
    split_metrics,
)
from pipeline.core.model import load_bundle, predict, serving_model
from pipeline.core.sources import locate

PAPER = [  # SCUT-FBP5500 paper, 60/40 split, ImageNet-pretrained networks (Liang et al., 2018)
    ("AlexNet (pretrained)", 0.8298, 0.2938, 0.3819),
    ("ResNet-18 (pretrained)", 0.8513, 0.2818, 0.3703),
    ("ResNeXt-50 (pretrained)", 0.8777, 0.2518, 0.3325),
    ("ComboLoss SE-ResNeXt-50 (pretrained, 2020)", 0.9117, 0.2126, 0.2813),   # best pretrained we know
]


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def plot(task: str, frame: pd.DataFrame, history: list[dict], out: Path) -> list[Path]:
    """Confusion matrix (gender) or predicted-vs-true scatter (rating), and training curves -> PNGs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [out / ("confusion.png" if task == "gender" else "scatter.png"), out / "curves.png"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    if task == "gender":
        skm.ConfusionMatrixDisplay.from_predictions(frame["actual"], frame["predicted"], ax=ax, colorbar=False)
    else:
        ax.scatter(frame["actual"], frame["predicted"], s=6, alpha=0.5)
        ax.plot([1, 5], [1, 5], "k--", lw=1)
        ax.set(xlabel="true rating", ylabel="predicted rating", xlim=(1, 5), ylim=(1, 5))
    ax.set_title(f"{task}: test split")
    fig.tight_layout()
    _savefig(fig, paths[0])
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    key = f"val_{MAIN_METRIC[task]}"
    checked = [h for h in history if h.get(key) is not None]  # val_every > 1: not every epoch was validated
    ax.plot([h["epoch"] for h in checked], [h[key] for h in checked], "o-", label=key)
    ax.set(xlabel="epoch")
    ax.legend()
    fig.tight_layout()
    _savefig(fig, paths[1])
    plt.close(fig)
    return paths


def report(task: str, m: dict, protocol: str) -> str:
    """Markdown results; for rating, our numbers beside the paper's table."""
    lines = [f"# {task}: test-split results", "", f"Protocol: {protocol}", ""]
    if "ci95" in m:
        spans = ", ".join(f"{k} [{lo:.4f}, {hi:.4f}]" for k, (lo, hi) in m["ci95"].items())
        lines += [f"95 % bootstrap intervals over the test photos (1000 resamples): {spans}", ""]
    if task == "gender":
        lines += [f"Accuracy {m['accuracy']:.4f}, ROC-AUC {m['roc_auc']:.4f}, confusion (rows true f/m) "
                  f"{m['confusion']}", ""]
    else:
        lines += ["| model | Pearson | MAE | RMSE |", "|---|---|---|---|",
                  f"| **ours (from scratch)** | **{m['pearson']:.4f}** | **{m['mae']:.4f}** | **{m['rmse']:.4f}** |",
                  *[f"| {n} | {pc:.4f} | {mae:.4f} | {rmse:.4f} |" for n, pc, mae, rmse in PAPER], "",
                  "Paper rows: SCUT-FBP5500 60/40 split (3300 train / 2200 test photos), official labels. "
                  "Comparable only when our protocol line says the same.", ""]
    main = MAIN_METRIC[task]
    names = [k[len(main) + 1:] for k in m if k.startswith(main + "_")]
    lines += [f"| group | n | {main} |" + (" MAE |" if task == "rating" else ""),
              "|---|--:|--:|" + ("--:|" if task == "rating" else "")]
    lines += [f"| {g} | {m[f'n_{g}']} | {m[f'{main}_{g}']:.4f} |" + (f" {m[f'mae_{g}']:.4f} |" if task == "rating" else "")
              for g in names]
    return "\n".join(lines) + "\n"


def _protocol(params, parts_sizes: dict[str, int]) -> str:
    ing, sp = params.ingest, params.split
    sources = ", ".join(f"`{s.name}` ({s.path}, labels `{locate(s.reader, s.path, s.label_file)[0].relative_to(s.path)}`, "
                        f"scale {s.scale[0]:g}-{s.scale[1]:g})" for s in ing.sources)
    sizes = "/".join(str(parts_sizes[p]) for p in ("train", "val", "test"))
    return (f"sources {sources}, split `{sp.method}` seed {sp.seed} "
            f"(train/val/test {sizes}), {ing.image_size} px, trained from scratch")


def populations(task: str, test, y_pred, maps: dict) -> tuple[list[dict], dict]:
    """Per-population rows and largest gaps; ratings on each source's own scale."""
    meta = test.meta
    if "source" in meta:
        y_true = test.targets(task).numpy() if task == "gender" else meta["rating_own"].to_numpy()
        y_pred = y_pred if task == "gender" else scales.to_own(y_pred, meta["source"], maps)
        src = meta["source"] + "/"
    else:
        y_true, src = test.targets(task).numpy(), ""
    groupings = {"source": (meta["source"] if "source" in meta else meta["group"].map(lambda _: "all")).to_numpy(),
                 "source/ethnicity": (src + meta["group"]).to_numpy(),
                 "source/ethnicity/gender": (src + meta["group"] + "/" + meta["gender"]).to_numpy()}
    rows = population_rows(task, y_true, y_pred, groupings)
    return rows, largest_gaps(task, rows)


def _model_card(path: Path = Path("MODEL_CARD.md")) -> str | None:
    """The model card, shown as the registered model's description in MLflow (None when absent)."""
    return path.read_text(encoding="utf-8") if path.is_file() else None


def score_test(task: str, bundle_path: Path, test, cfg) -> tuple[np.ndarray, dict]:
    """A bundle scored on the test part as the service will serve it: its own execution policy on
    this machine, flip averaging as params say -> (predictions, how it ran)."""
    model, policy = serving_model(bundle_path, task)
    return predict(model, test.images, cfg.batch_size, cfg.tta_flip, policy), policy.describe()


def predictions_frame(task: str, test, y_pred: np.ndarray) -> pd.DataFrame:
    """One row per test photo: its score, and actual / predicted as DVC's confusion / scatter plots read them."""
    y_true = test.targets(task).numpy()
    frame = pd.DataFrame({"filename": test.meta["filename"], "group": test.meta["group"], "score": y_pred})
    if "source" in test.meta:
        frame.insert(1, "source", test.meta["source"].to_numpy())
    if task == "gender":
        frame["actual"] = np.where(y_true == 1, "m", "f")
        frame["predicted"] = np.where(y_pred >= 0.5, "m", "f")
    else:
        frame["actual"], frame["predicted"] = y_true, y_pred
    return frame


def write_reports(task: str, m: dict, frame: pd.DataFrame, model_dir: Path, out: Path, protocol: str,
                  pops: str = "") -> list[Path]:
    """predictions.csv, the plots, report.md and the layer table -> the files MLflow also gets."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "predictions.csv", frame.to_csv(index=False))
    pngs = plot(task, frame, json.loads((model_dir / "history.json").read_text()), out)
    write_text(out / "report.md", report(task, m, protocol) + ("\n" + pops if pops else ""))
    net, bundle = load_bundle(model_dir / "model.pt")
    title = f"{task} model ({bundle['model_config']['arch']})"
    write_text(out / "params.md", to_markdown(layer_table(net, bundle["model_config"]["image_size"]), title))
    return [*pngs, out / "report.md", out / "params.md"]


def register(params, task: str, model_dir: Path, m: dict, rescore, logged: list[Path], pops: str = "",
             pop_rows: list[dict] | None = None) -> dict:
    """Test metrics into the training run, the model into the registry; the champion gate -> its decision."""
    from pipeline import tracking

    run = json.loads((model_dir / "run.json").read_text())
    name = f"{params.tracking.experiment}-{params.ingest.dataset}-{task}"
    main = MAIN_METRIC[task]
    with tracking.continue_run(params, run["run_id"]):
        tracking.log_metrics({f"test_{k}": v for k, v in m.items() if isinstance(v, float)})
        tracking.log_metrics({f"test_{k}_ci95_{end}": b for k, span in m["ci95"].items()
                              for end, b in zip(("lo", "hi"), span, strict=True)})
        tracking.log_metrics({f"test_{k}": v for k, v in population_metrics(task, pop_rows or []).items()})
        tracking.log_metrics({f"test_largest_gap/{k}": v for k, v in m.get("largest_gap", {}).items()})
        tracking.log_artifacts(logged, "evaluation")
        return tracking.register_and_promote(run["model_uri"], name, main, m[main], score_champion=rescore,
                                             promote=params.evaluate.promote,
                                             weights_sha256=sha256_file(model_dir / "model.pt"),
                                             description=(_model_card() or "") + "\n" + pops)


def main() -> None:
    ap = argparse.ArgumentParser(description="Evaluate one task's model on the test split")
    for a in ("--model", "--data", "--split", "--out"):
        ap.add_argument(a, required=True, type=Path)
    ap.add_argument("--task", required=True, choices=list(MAIN_METRIC))
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline.core.config import load_params

    params, task = load_params(args.params), args.task
    bundle = torch.load(args.model / "model.pt", weights_only=True, map_location="cpu")   # the facts, no network
    maps = bundle.get("trained_on", {}).get("rating_scales", {})
    test = on_served_scale(load_parts(args.data, args.split, ("test",)), maps)["test"]
    y_true = test.targets(task).numpy()
    subgroups = (test.meta["group"] + "_" + test.meta["gender"]).to_numpy()     # e.g. asian_f
    y_pred, how = score_test(task, args.model / "model.pt", test, params.evaluate)
    m = compute_metrics(task, y_true, y_pred, [test.meta["group"].to_numpy(), subgroups])
    m["ci95"] = bootstrap_ci(task, y_true, y_pred)       # what this one test split can tell apart
    pop_rows, gaps = populations(task, test, y_pred, maps)
    m["largest_gap"] = {k: v["gap"] for k, v in gaps.items()}
    pops = populations_markdown(task, pop_rows, gaps)
    sizes = {p: len(read_names(args.split / f"{p}.txt")) for p in ("train", "val", "test")}
    protocol = f"{_protocol(params, sizes)}; scored in {how['precision']} {how['memory_format']} on {how['device']}"
    logged = write_reports(task, m, predictions_frame(task, test, y_pred), args.model, args.out, protocol, pops)

    def rescore(path) -> float:                          # the champion's bundle on these test photos
        return compute_metrics(task, y_true, score_test(task, Path(path), test, params.evaluate)[0])[MAIN_METRIC[task]]

    decision = register(params, task, args.model, m, rescore, logged, pops, pop_rows)
    headline, by_group = split_metrics(m)
    write_text(args.out / "groups.json", json.dumps({**by_group, "populations": pop_rows, "gaps": gaps}, indent=2) + "\n")
    write_text(args.out / "metrics.json", json.dumps({**headline, "registry": decision}, indent=2) + "\n")
    shown = {k: round(v, 4) for k, v in headline.items() if isinstance(v, float)}
    print(f"evaluate {task}: {shown}\n  registry: {decision}")


if __name__ == "__main__":
    main()
