"""pipeline/cli/estimate.py: one seed's overrides and the mean +- sd over seeds."""
import json

import pytest

from pipeline.cli.estimate import read_metrics, seed_sets, summarise


def test_a_seed_draws_its_own_split_and_init_and_registers_nothing():
    sets = seed_sets(7)
    assert {"split.seed=7", "train.gender.seed=7", "train.rating.seed=7"} <= set(sets)
    assert "refit.enabled=false" in sets and "evaluate.promote=false" in sets


def test_mean_and_sample_sd_over_seeds():
    runs = {s: {"gender": {"accuracy": a}, "rating": {"pearson": p, "mae": 0.3, "rmse": 0.4}}
            for s, a, p in ((0, 0.96, 0.86), (1, 0.98, 0.88), (2, 0.97, 0.90))}
    out = summarise(runs)
    assert out["gender_accuracy"]["mean"] == pytest.approx(0.97) and out["gender_accuracy"]["sd"] == pytest.approx(0.01)
    assert out["rating_pearson"]["sd"] == pytest.approx(0.02) and out["rating_pearson"]["n"] == 3
    assert out["rating_mae"]["sd"] == 0.0 and (out["rating_pearson"]["min"], out["rating_pearson"]["max"]) == (0.86, 0.90)
    assert summarise({0: runs[0]})["gender_accuracy"]["sd"] == 0.0          # one run: no spread, not an error


def test_the_headline_metrics_are_read_from_each_tasks_report(tmp_path):
    for task, m in (("gender", {"accuracy": 0.9, "roc_auc": 0.95}), ("rating", {"pearson": 0.8, "mae": 0.3, "rmse": 0.4})):
        (tmp_path / "reports/eval" / task).mkdir(parents=True)
        (tmp_path / "reports/eval" / task / "metrics.json").write_text(json.dumps(m))
    assert read_metrics(tmp_path) == {"gender": {"accuracy": 0.9}, "rating": {"pearson": 0.8, "mae": 0.3, "rmse": 0.4}}
