import dataclasses

import pytest

from pipeline import tracking
from pipeline.config import load_params

from conftest import ROOT


@pytest.fixture
def params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = load_params(ROOT / "params.yaml")
    return dataclasses.replace(p, tracking=dataclasses.replace(p.tracking, uri=f"sqlite:///{tmp_path}/m.db"))


def test_stage_run_logs_params_metrics_tags_and_dataset(params, tmp_path):
    import mlflow
    import pandas as pd

    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  ingest:\n    outs:\n    - path: data/ingested/meta.parquet\n      md5: abc123\n")
    with tracking.stage_run(params, "split", params.split) as run_id:
        tracking.log_metrics({"train_rows": 7})
        tracking.log_table(pd.DataFrame({"filename": ["ftw1.jpg"], "rating": [2.0]}), "faces-train", "x", "train")
    run = mlflow.get_run(run_id)
    assert run.data.params["split.seed"] == str(params.split.seed)
    assert run.data.metrics["train_rows"] == 7
    assert run.data.tags["stage"] == "split" and run.data.tags["data_hash"] == "abc123"
    assert run.data.tags["git_commit"]
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["faces-train"]
    assert mlflow.get_experiment(run.info.experiment_id).name == params.tracking.experiment


def test_data_hash_without_a_lock_file(tmp_path):
    assert tracking.data_hash(tmp_path / "dvc.lock") == "unknown"
