"""The registry's promotion policy: what makes a model the champion, and what its registry page holds.

Pure (no MLflow): pipeline/tracking.py applies it, and dvc.yaml lists this file as a dependency of the
stages that promote (evaluate, refit), so a change of policy reruns them.
"""
from __future__ import annotations

import math

ALIAS = "champion"                      # the registered model's alias that `package` serves


def beats(value: float, champion: float | None) -> bool:
    """Whether a new model's metric beats the champion's (None: there is none). NaN (no correlation: a
    constant prediction) loses to any number, so a NaN champion is replaced and a NaN model never wins."""
    if math.isnan(value):
        return champion is None
    return champion is None or math.isnan(champion) or value > champion


DESCRIPTION_LIMIT = 5000                 # registered_models.description is VARCHAR(5000): PostgreSQL enforces it


def fit_description(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """`text` cut at its last paragraph that fits the tracking store's column, with a note saying so
    (sqlite ignores the column's length; PostgreSQL and MySQL refuse a longer value)."""
    if len(text) <= limit:
        return text
    note = "\n\n*(cut to fit the registry; the whole card is MODEL_CARD.md in the repository)*\n"
    head = text[:limit - len(note)]
    return head[:head.rfind("\n\n")] + note if "\n\n" in head else head + note
