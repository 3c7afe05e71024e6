"""Task metrics, shared by training (model selection on the validation split) and the evaluate stage.

    compute_metrics("rating", y_true, y_pred, groups)   # -> {"mae", "rmse", "pearson", ...}

A core module: no stage imports another stage, so what both train and evaluate need lives here.
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from pipeline.core.tasks import SERVED, TASKS

# higher is better for both (pipeline/core/tasks.py); every served task has one
MAIN_METRIC: dict[str, str] = {t: str(TASKS[t].main_metric) for t in SERVED}


HEADLINE = ("accuracy", "roc_auc", "confusion", "mae", "rmse", "pearson", "spearman", "ci95", "largest_gap")


def split_metrics(m: dict) -> tuple[dict, dict]:
    """compute_metrics' dict -> (headline numbers, per-group numbers `<metric>_<group>` and `n_<group>`):
    `dvc metrics show` lists the first, the second is a file beside it."""
    return {k: v for k, v in m.items() if k in HEADLINE}, {k: v for k, v in m.items() if k not in HEADLINE}


def compute_metrics(task: str, y_true, y_pred, groups=None) -> dict:
    """Pure metrics. gender: y_true 0/1 (1 = m), y_pred = P(m). rating: y_true, y_pred ratings.

    groups: one label per photo (or a list of such arrays); adds `<main metric>_<label>`, `n_<label>`
    and, for rating, `mae_<label>` for every label.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred, dtype=np.float64)
    if task == "gender":
        hard = (y_pred >= 0.5).astype(int)
        out = {"accuracy": skm.accuracy_score(y_true, hard),
               "roc_auc": skm.roc_auc_score(y_true, y_pred) if len(set(y_true)) == 2 else float("nan"),
               "confusion": skm.confusion_matrix(y_true, hard, labels=[0, 1]).tolist()}
        per = lambda m: skm.accuracy_score(y_true[m], hard[m])                          # noqa: E731
    else:
        out = {"mae": skm.mean_absolute_error(y_true, y_pred),
               "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
               "pearson": _corr(stats.pearsonr, y_true, y_pred),
               "spearman": _corr(stats.spearmanr, y_true, y_pred)}
        per = lambda m: _corr(stats.pearsonr, y_true[m], y_pred[m])                     # noqa: E731
    if groups is None:
        groups = []
    elif not isinstance(groups, list):
        groups = [groups]
    for labels in map(np.asarray, groups):
        for g in sorted(set(labels)):
            mask = labels == g
            out[f"{MAIN_METRIC[task]}_{g}"], out[f"n_{g}"] = per(mask), int(mask.sum())
            if task == "rating":
                out[f"mae_{g}"] = skm.mean_absolute_error(y_true[mask], y_pred[mask])
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}


def _corr(fn, a, b) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")                  # a constant prediction has no correlation, not 0 or 1
    return float(fn(a, b)[0])


def bootstrap_ci(task: str, y_true, y_pred, n: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile intervals of the headline metrics over `n` resamples (with replacement) of the
    test photos -> {"accuracy": [lo, hi]} (gender) or {"pearson", "mae", "rmse": [lo, hi]} (rating).

    What one test split can tell apart: on ~500 photos Pearson moves by about +-0.02 and accuracy by
    about +-1.3 points from the photos drawn alone, before any training noise."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(y_true), (n, len(y_true)))      # (n, N)
    t, p = y_true[idx], y_pred[idx]
    if task == "gender":
        draws = {"accuracy": ((p >= 0.5) == (t == 1)).mean(1)}
    else:
        tc, pc = t - t.mean(1, keepdims=True), p - p.mean(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (tc * pc).sum(1) / np.sqrt((tc ** 2).sum(1) * (pc ** 2).sum(1))
        draws = {"pearson": r, "mae": np.abs(t - p).mean(1), "rmse": np.sqrt(((t - p) ** 2).mean(1))}
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {k: [float(v) for v in np.nanpercentile(d, q)] for k, d in draws.items()}


SMALL_GROUP = 30    # fewer test photos than this: the group is reported, with its interval, and flagged


def population_rows(task: str, y_true, y_pred, groupings: dict[str, np.ndarray], n_boot: int = 1000,
                    seed: int = 0) -> list[dict]:
    """The main metric (and MAE for rating) of every group of every grouping, with a 95 % bootstrap
    interval over that group's photos -> [{"grouping", "group", "n", "<metric>", "ci95": {...}, "small"}].

    `groupings`: a name -> one label per photo (e.g. "source", "source/ethnicity/gender"). A group with
    fewer than SMALL_GROUP photos is kept and flagged (`small`): its interval says how little it shows."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    main = MAIN_METRIC[task]
    rows = []
    for grouping, labels in groupings.items():
        labels = np.asarray(labels)
        for g in sorted(set(labels)):
            m = labels == g
            t, p = y_true[m], y_pred[m]
            row = {"grouping": grouping, "group": str(g), "n": int(m.sum()), "small": bool(m.sum() < SMALL_GROUP)}
            if task == "gender":
                row[main] = float(((p >= 0.5) == (t == 1)).mean())
            else:
                row[main], row["mae"] = _corr(stats.pearsonr, t, p), float(np.abs(t - p).mean())
            row["ci95"] = bootstrap_ci(task, t, p, n=n_boot, seed=seed) if len(t) > 1 else {}
            rows.append(row)
    return rows


def population_metrics(task: str, rows: list[dict]) -> dict[str, float]:
    """Population rows as flat metric names for MLflow: `pop/<grouping>/<group>/<metric>` (+ `_lo`, `_hi`)."""
    out = {}
    for r in rows:
        key = f"pop/{r['grouping']}/{r['group']}"
        out[f"{key}/n"] = float(r["n"])
        for metric in ("accuracy", "pearson", "mae"):
            if metric in r:
                out[f"{key}/{metric}"] = r[metric]
                if metric in r["ci95"]:
                    out[f"{key}/{metric}_lo"], out[f"{key}/{metric}_hi"] = r["ci95"][metric]
    return {k: v for k, v in out.items() if not np.isnan(v)}


def largest_gaps(task: str, rows: list[dict]) -> dict:
    """Per grouping with two or more groups of >= SMALL_GROUP photos: the best and worst group on the
    main metric and the gap between them (small groups are left out: their noise alone makes gaps)."""
    main = MAIN_METRIC[task]
    out = {}
    for grouping in dict.fromkeys(r["grouping"] for r in rows):
        big = [r for r in rows if r["grouping"] == grouping and not r["small"] and not np.isnan(r[main])]
        if len(big) >= 2:
            lo, hi = min(big, key=lambda r: r[main]), max(big, key=lambda r: r[main])
            out[grouping] = {"gap": hi[main] - lo[main], "best": hi["group"], "worst": lo["group"],
                             main: [lo[main], hi[main]]}
    return out


def populations_markdown(task: str, rows: list[dict], gaps: dict) -> str:
    """The per-population table of report.md and of the registered model's description."""
    main = MAIN_METRIC[task]
    rating = task == "rating"
    lines = ["## Quality per population (test split; rating on each source's own scale)", "",
             f"| grouping | group | n | {main} | 95 % interval |" + (" MAE |" if rating else ""),
             "|---|---|--:|--:|---|" + ("--:|" if rating else "")]
    for r in rows:
        lo, hi = r["ci95"].get(main, [float("nan")] * 2)
        flag = " (n < 30)" if r["small"] else ""
        lines.append(f"| {r['grouping']} | {r['group']}{flag} | {r['n']} | {r[main]:.3f} | [{lo:.3f}, {hi:.3f}] |"
                     + (f" {r['mae']:.3f} |" if rating else ""))
    lines += ["", "Largest gap between groups of >= 30 photos: " + ("; ".join(
        f"{k}: {v['gap']:.3f} ({v['worst']} {v[main][0]:.3f} vs {v['best']} {v[main][1]:.3f})"
        for k, v in gaps.items()) or "none (fewer than two such groups)"), ""]
    return "\n".join(lines)
