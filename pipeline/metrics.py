"""Task metrics, shared by training (model selection on the validation split) and the evaluate stage.

    compute_metrics("rating", y_true, y_pred, groups)   # -> {"mae", "rmse", "pearson", ...}

A core module: no stage imports another stage, so what both train and evaluate need lives here.
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from pipeline.tasks import SERVED, TASKS

# higher is better for both (pipeline/tasks.py); every served task has one
MAIN_METRIC: dict[str, str] = {t: str(TASKS[t].main_metric) for t in SERVED}


HEADLINE = ("accuracy", "roc_auc", "confusion", "mae", "rmse", "pearson", "spearman", "ci95")


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
