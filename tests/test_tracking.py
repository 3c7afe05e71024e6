import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import tracking
from pipeline.core.config import load_params

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
        "schema: '2.0'\nstages:\n  combine:\n    outs:\n    - path: data/ingested/meta.parquet\n      md5: abc123\n")
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


def test_runs_are_named_by_stage_source_arch_and_dvc_experiment(params, monkeypatch):
    import mlflow

    with tracking.stage_run(params, "train-rating", tags={"arch": "convnet"}) as run_id:
        pass
    assert mlflow.get_run(run_id).info.run_name == "train-rating synthetic convnet"
    monkeypatch.setenv("DVC_EXP_NAME", "scut-20261201-1830")
    with tracking.stage_run(params, "split") as run_id:
        pass
    run = mlflow.get_run(run_id)
    assert run.info.run_name == "split synthetic (scut-20261201-1830)"
    assert run.data.tags["dvc_experiment"] == "scut-20261201-1830" and run.data.tags["source"] == "synthetic"


def test_data_hash_without_a_lock_file(tmp_path):
    assert tracking.data_hash(tmp_path / "dvc.lock") == "unknown"


@pytest.mark.slow
def test_champion_moves_only_when_beaten_on_the_same_test_split(params, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from pipeline.core.model import TaskModel, load_bundle

    from conftest import tiny_bundle

    tracking.setup(params)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    uris = []
    for seed in range(3):
        with mlflow.start_run():
            bundle = tiny_bundle(tmp_path / f"{seed}" / "model.pt", "rating", seed=seed)
            uris.append(tracking.log_torch_model(TaskModel(load_bundle(bundle)[0], "rating").eval(), images))
            tracking.log_artifacts([bundle], "bundle")
    first_weights = load_bundle(tmp_path / "0" / "model.pt")[1]["state_dict"]
    seen = []

    def rescore(path):                    # the champion re-scored on "this" split: 0.6
        seen.append(load_bundle(path)[1]["state_dict"])      # weights_only: the bundle, never a pickle
        return 0.6

    first = tracking.register_and_promote(uris[0], "t-rating", "pearson", 0.5, rescore)
    assert first["promoted"] and first["champion_version"] == 1 and seen == []
    second = tracking.register_and_promote(uris[1], "t-rating", "pearson", 0.55, rescore)
    assert not second["promoted"] and second["champion_version"] == 1 and second["champion_rescored"] == 0.6
    third = tracking.register_and_promote(uris[2], "t-rating", "pearson", 0.7, rescore)
    assert third["promoted"] and third["version"] == 3
    assert int(MlflowClient().get_model_version_by_alias("t-rating", "champion").version) == 3
    assert len(seen) == 2                 # both times the champion was version 1: its own weights
    for got in seen:
        assert all(torch.equal(got[k], first_weights[k]) for k in first_weights)


def test_champion_downloads_the_refit_when_its_run_has_one_else_the_split_bundle(params, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from pipeline.core.model import TaskModel, load_bundle

    from conftest import tiny_bundle

    tracking.setup(params)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    for seed, refit in ((0, False), (1, True)):
        with mlflow.start_run():
            split = tiny_bundle(tmp_path / f"s{seed}" / "model.pt", "rating", seed=seed)
            uri = tracking.log_torch_model(TaskModel(load_bundle(split)[0], "rating").eval(), images)
            tracking.log_artifacts([split], "bundle")
            if refit:
                final = tiny_bundle(tmp_path / f"f{seed}" / "final.pt", "rating", seed=seed + 10)
                tracking.log_artifacts([final], "final")
            tracking.register_and_promote(uri, "t-rating", "pearson", 0.5 + seed, lambda path: 0.0)
        got = tracking.champion(params, "t-rating", ["final/final.pt", "bundle/model.pt"], tmp_path / f"d{seed}")
        want = final if refit else split
        assert got["artifact"] == ("final/final.pt" if refit else "bundle/model.pt")
        assert Path(got["path"]).read_bytes() == want.read_bytes()
    MlflowClient().set_registered_model_alias("t-rating", "champion", "1")
    with pytest.raises(FileNotFoundError, match="has no artifact"):
        tracking.champion(params, "t-rating", ["final/final.pt", "nothing/model.pt"], tmp_path / "e")


def test_setup_leaves_the_users_tracking_uri_alone(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports the URI to os.environ; setup() undoes that, so the next setup()
    (or a `dvc repro` started from this process) reads its own params.yaml, not this one's."""
    import os

    from pipeline import tracking
    from pipeline.core.config import load_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(ROOT / "params.yaml")
    first = dataclasses.replace(params, tracking=dataclasses.replace(params.tracking, uri=f"sqlite:///{tmp_path}/a.db"))
    tracking.setup(first)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracking.tracking_uri(params) == params.tracking.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/server.db")      # the user's choice wins
    tracking.setup(first)
    import mlflow

    assert mlflow.get_tracking_uri() == os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/server.db"
