"""The task table: every per-task fact in one place (core: imported by model, data, fit, metrics, sources).

    TASKS["rating"].outputs      # 1: one linear output, a regression
    TASKS["gender"].positive     # "m": label 1 of the two-class head, P(male) in every answer

`gender` and `rating` are the served tasks; `group` (Asian / Caucasian, from the file names) is only
ever an auxiliary head that shapes a shared trunk.
"""
from __future__ import annotations

from dataclasses import dataclass

RATING_RANGE = (1.0, 5.0)            # SCUT-FBP5500's and the course's scale; predictions are clipped to it


@dataclass(frozen=True)
class Task:
    name: str
    column: str                      # the meta.parquet column with its label
    outputs: int                     # head outputs: 2 logits (classes) or 1 number (regression)
    positive: str | None             # the class coded 1 (classification); None for a regression
    main_metric: str | None          # what validation keeps and the registry compares (higher is better)
    aux_loss: str                    # its loss as an auxiliary head (params.yaml sets the main task's loss)


TASKS = {
    "gender": Task("gender", "gender", 2, positive="m", main_metric="accuracy", aux_loss="cross_entropy"),
    "rating": Task("rating", "rating", 1, positive=None, main_metric="pearson", aux_loss="huber"),
    "group": Task("group", "group", 2, positive="caucasian", main_metric=None, aux_loss="cross_entropy"),
}
SERVED = ("gender", "rating")        # the tasks with a model, an evaluate stage and an answer field
