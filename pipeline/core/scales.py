"""Ratings from several scales -> the one the service answers on (SCUT-FBP5500's 1-5, tasks.RATING_RANGE).

    maps = fit_maps(train_meta, sources)     # {"scut": (1.0, 0.0), "mebeauty": (a, b)}: served = a * own + b
    meta = to_served(meta, maps)             # `rating` on the served scale, `rating_own` kept
    own = to_own(predictions, sources_of_rows, maps)

The design (docs/faces.md): a source whose scale is the served one is the reference and
is not touched. Any other source is mapped by the affine map that gives its *training-part* ratings the
reference's training-part mean and standard deviation (moment matching). One rating head then learns
from every photo; the service answers on SCUT's scale. Why affine: Pearson on a source's own scale is
unchanged by it, so "Pearson per source" measures how well faces are ordered, whatever the map; what
the map assumes is that the two rater pools rank faces alike and differ in offset and spread (MEBeauty:
1-10, ~300 raters of many cultures; SCUT: 1-5, 60 raters), and that the two training parts are about
equally attractive on average. Without a reference source (a MEBeauty-only run) each scale's ends map
to the served scale's ends. The map is fitted in the train stage and travels in the model bundle
(`trained_on.rating_scales`), so evaluate reports MAE on each source's own scale with the same map.

A core module: no stage, no tool.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.core.sources import SourceConfig
from pipeline.core.tasks import RATING_RANGE

Map = tuple[float, float]          # served = a * own + b


def fit_maps(train: pd.DataFrame, sources: Sequence[SourceConfig]) -> dict[str, Map]:
    """One affine map per source, fitted on the training part's rows (`source`, `rating` own scale)."""
    ref = next((s for s in sources if tuple(s.scale) == RATING_RANGE), None)
    r = train.loc[train["source"] == ref.name, "rating"].to_numpy(np.float64) if ref else np.zeros(0)
    mu_ref, sd_ref = (float(r.mean()), float(r.std())) if len(r) > 1 else (0.0, 0.0)
    maps: dict[str, Map] = {}
    for s in sources:
        own = train.loc[train["source"] == s.name, "rating"].to_numpy(np.float64)
        if tuple(s.scale) == RATING_RANGE:
            maps[s.name] = (1.0, 0.0)
        elif sd_ref == 0 or len(own) < 2 or own.std() == 0:
            lo, hi = s.scale                               # ends to ends
            a = (RATING_RANGE[1] - RATING_RANGE[0]) / (hi - lo)
            maps[s.name] = (a, RATING_RANGE[0] - a * lo)
        else:
            a = sd_ref / float(own.std())
            maps[s.name] = (a, mu_ref - a * float(own.mean()))
    return maps


def to_served(meta: pd.DataFrame, maps: dict[str, Map]) -> pd.DataFrame:
    """A copy with `rating` on the served scale and the label as written in `rating_own`."""
    out = meta.copy()
    a, b = _coefficients(out["source"], maps)
    out["rating_own"] = out["rating"]
    out["rating"] = a * out["rating"].to_numpy(np.float64) + b
    return out


def to_own(served: np.ndarray, source: Sequence[str] | pd.Series, maps: dict[str, Map]) -> np.ndarray:
    """Served-scale values (predictions) -> each row's own source scale."""
    a, b = _coefficients(pd.Series(list(source)), maps)
    return (np.asarray(served, np.float64) - b) / a


def _coefficients(source: pd.Series, maps: dict[str, Map]) -> tuple[np.ndarray, np.ndarray]:
    unknown = set(source) - set(maps)
    if unknown:
        raise KeyError(f"no rating map for source(s) {sorted(unknown)}: the model was trained without them")
    return (source.map({k: v[0] for k, v in maps.items()}).to_numpy(np.float64),
            source.map({k: v[1] for k, v in maps.items()}).to_numpy(np.float64))
