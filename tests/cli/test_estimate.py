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


def test_each_seed_runs_the_pipeline_up_to_evaluate_only(tmp_path, monkeypatch):
    """param_report and package add nothing to an estimate, and package would look for a champion that
    no estimate run may make (promote false): a fresh clone's `make estimate` failed there."""
    import sys

    from pipeline.cli import estimate

    from conftest import ROOT

    test_the_headline_metrics_are_read_from_each_tasks_report(tmp_path)     # each seed's reports
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "profiles").symlink_to(ROOT / "profiles")
    calls = []
    monkeypatch.setattr(estimate.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.setattr(sys, "argv", ["estimate", "--profile", "scut", "--data", str(tmp_path), "--seeds", "3", "4"])
    estimate.main()
    assert [c[:3] + c[-1:] for c in calls] == [["dvc", "exp", "run", "evaluate"]] * 2
    assert "split.seed=4" in calls[1] and "evaluate.promote=false" in calls[1]
    assert json.loads((tmp_path / "reports/estimate.json").read_text())["summary"]["rating_pearson"]["n"] == 2
