"""pipeline/core/tasks.py: one table, and the modules that used to hold these facts read it."""
import pandas as pd

from pipeline.core.data import Part
from pipeline.core.metrics import MAIN_METRIC
from pipeline.core.model import HEAD_OUTPUTS, ModelConfig, build_model
from pipeline.core.tasks import RATING_RANGE, SERVED, TASKS


def test_heads_targets_and_metrics_come_from_the_table():
    import numpy as np
    import torch

    assert HEAD_OUTPUTS == {"gender": 2, "rating": 1, "group": 6} and set(MAIN_METRIC) == set(SERVED)
    meta = pd.DataFrame({"gender": ["f", "m", "m"], "group": ["asian", "caucasian", "asian"], "rating": [1.5, 4.0, 3.0]})
    part = Part(np.zeros((3, 8, 8, 3), np.uint8), meta)
    assert part.targets("gender").tolist() == [0, 1, 1] and part.targets("group").tolist() == [0, 2, 0]
    assert part.targets("rating").dtype == torch.float32
    net = build_model(ModelConfig("convnet", (4,), 0.0, 8), list(TASKS))
    assert {k: h.out_features for k, h in net.heads.items()} == HEAD_OUTPUTS


def test_served_ratings_are_clipped_to_the_tables_range():
    import torch

    from pipeline.core.model import TaskModel

    class Wild(torch.nn.Module):
        def forward(self, x):
            return {"rating": torch.tensor([-3.0, 2.5, 9.0])}

    assert TaskModel(Wild(), "rating")(torch.zeros(3)).tolist() == [RATING_RANGE[0], 2.5, RATING_RANGE[1]]
