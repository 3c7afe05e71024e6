"""The task table: every per-task fact in one place (core: imported by model, data, fit, metrics, sources).

    TASKS["rating"].outputs      # 1: one linear output, a regression
    TASKS["gender"].positive     # "m": label 1 of the two-class head, P(male) in every answer

`gender` and `rating` are the served tasks; `group` (ethnicity: SCUT's file names say Asian or
Caucasian, MEBeauty's labels one of six) is only ever an auxiliary head that shapes a shared trunk.
"""
from __future__ import annotations

from dataclasses import dataclass

RATING_RANGE = (1.0, 5.0)            # SCUT-FBP5500's and the course's scale; predictions are clipped to it
# the ethnicity labels of the sources (MEBeauty's six; SCUT has the first and third): the group head's classes
GROUPS = ("asian", "black", "caucasian", "hispanic", "indian", "mideastern")


@dataclass(frozen=True)
class Task:
    name: str
    column: str                      # the meta.parquet column with its label
    outputs: int                     # head outputs: one logit per class, or 1 number (regression)
    positive: str | None             # the class coded 1 of a two-class task
    classes: tuple[str, ...] | None  # the classes of a many-class task, coded by their index
    main_metric: str | None          # what validation keeps and the registry compares (higher is better)
    aux_loss: str                    # its loss as an auxiliary head (params.yaml sets the main task's loss)


TASKS = {
    "gender": Task("gender", "gender", 2, "m", None, main_metric="accuracy", aux_loss="cross_entropy"),
    "rating": Task("rating", "rating", 1, None, None, main_metric="pearson", aux_loss="huber"),
    "group": Task("group", "group", len(GROUPS), None, GROUPS, main_metric=None, aux_loss="cross_entropy"),
}
SERVED = ("gender", "rating")        # the tasks with a model, an evaluate stage and an answer field
