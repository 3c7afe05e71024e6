"""The champion gate through `evaluate.main`: registration, promotion and its edge cases.

The models' test predictions are set by the test (the scoring call is replaced), so each case has
the metric it names: a strictly worse model, a champion whose metric is NaN, `promote: false`.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core.data import read_names

from conftest import ROOT, tiny_bundle


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_faces):
    """A run folder: params.yaml (own MLflow db), 40 ingested faces, a split, nothing registered."""
    from pipeline.core.sources import read_labels
    from pipeline.stages.ingest import ingest

    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tracking"]["uri"] = f"sqlite:///{tmp_path}/m.db"
    raw["ingest"]["sources"][0]["path"] = str(tiny_faces)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    res = ingest(read_labels(tiny_faces / "FaceScore.csv", "facescore"), tiny_faces / "images", 32, 10**8)
    (tmp_path / "data/ingested").mkdir(parents=True)
    np.save(tmp_path / "data/ingested/images.npy", res.images)
    res.meta.to_parquet(tmp_path / "data/ingested/meta.parquet")
    names = list(res.meta["filename"])
    (tmp_path / "data/split").mkdir(parents=True)
    for part, chunk in (("train", names[:20]), ("val", names[20:28]), ("test", names[28:])):
        (tmp_path / f"data/split/{part}.txt").write_text("\n".join(chunk) + "\n")
    return tmp_path


def _trained(workdir, name: str, seed: int):
    """A model folder as the train stage leaves it: bundle, history, and its MLflow run."""
    from pipeline import tracking
    from pipeline.core.config import load_params
    from pipeline.core.model import TaskModel, load_bundle

    folder = workdir / "models" / name
    bundle = tiny_bundle(folder / "model.pt", "rating", seed=seed)
    (folder / "history.json").write_text('[{"epoch": 1, "train_loss": 1.0, "val_pearson": 0.1}]\n')
    with tracking.stage_run(load_params(), "train-rating") as run_id:
        uri = tracking.log_torch_model(TaskModel(load_bundle(bundle)[0], "rating").eval(),
                                       np.zeros((2, 32, 32, 3), np.uint8))
        tracking.log_artifacts([bundle], "bundle")
    (folder / "run.json").write_text(json.dumps({"run_id": run_id, "model_uri": uri}))
    return folder


@pytest.fixture
def scored(monkeypatch, workdir):
    """{sha256 of a bundle: sd} -> that model's test predictions are the truth plus noise of that sd,
    or a constant (NaN Pearson) for None; the champion, re-scored from its downloaded bundle, is
    recognised by the same hash."""
    import pandas as pd
    import torch

    import pipeline.core.model as model_module
    from pipeline.core.atomic import sha256_file
    from pipeline.core.execution import Execution, resolve

    quality: dict[str, float | None] = {}
    meta = pd.read_parquet(workdir / "data/ingested/meta.parquet").set_index("filename")
    truth = meta.loc[read_names(workdir / "data/split/test.txt"), "rating"].to_numpy()
    policy = resolve(Execution(), torch.device("cpu"))

    def predict(sha, images, *a, **k):
        sd = quality[sha]
        return np.full(len(truth), 3.0) if sd is None else truth + np.random.default_rng(1).normal(0, sd, len(truth))

    import pipeline.stages.evaluate as evaluate_module

    for module in (model_module, evaluate_module):            # evaluate binds both names at import
        monkeypatch.setattr(module, "serving_model", lambda path, task, *a, **k: (sha256_file(path), policy))
        monkeypatch.setattr(module, "predict", predict)

    def set_quality(folder, sd):
        quality[sha256_file(folder / "model.pt")] = sd
    return set_quality


def _evaluate(monkeypatch, folder, promote=True) -> dict:
    from pipeline.stages import evaluate

    params = Path("params.yaml")
    raw = yaml.safe_load(params.read_text())
    raw["evaluate"]["promote"] = promote
    params.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(sys, "argv", ["evaluate", "--task", "rating", "--model", str(folder), "--data",
                                      "data/ingested", "--split", "data/split", "--out", f"reports/{folder.name}"])
    evaluate.main()
    return json.loads(Path(f"reports/{folder.name}/metrics.json").read_text())["registry"]


@pytest.mark.slow
def test_a_strictly_worse_second_model_is_registered_but_not_promoted(workdir, scored, monkeypatch):
    good, worse = _trained(workdir, "a", 0), _trained(workdir, "b", 1)
    scored(good, 0.1), scored(worse, 0.8)
    import mlflow
    from mlflow import MlflowClient

    (workdir / "MODEL_CARD.md").write_text("# Model card\nwhat it is for\n")
    run_id = json.loads((good / "run.json").read_text())["run_id"]
    ended = mlflow.get_run(run_id).info.end_time
    first = _evaluate(monkeypatch, good)
    assert first["promoted"] and first["version"] == 1 and first["champion_rescored"] is None
    assert MlflowClient().get_registered_model("faces-synthetic-rating").description.startswith("# Model card")
    run = mlflow.get_run(run_id)          # evaluate added to the training run without re-opening it
    assert run.info.end_time == ended and "test_pearson" in run.data.metrics
    assert run.data.tags["champion"] == "faces-synthetic-rating v1"
    second = _evaluate(monkeypatch, worse)
    assert second["version"] == 2 and not second["promoted"] and second["champion_version"] == 1
    assert second["champion_rescored"] == pytest.approx(first["pearson"])       # the same photos, re-scored
    assert second["pearson"] < second["champion_rescored"]
    assert mlflow.get_run(run_id).data.tags["champion"] == "faces-synthetic-rating v1"    # not replaced
    again = _evaluate(monkeypatch, good)               # the same weights once more: no third version
    assert again["version"] == 1 and not again["registered"] and again["champion_version"] == 1


@pytest.mark.slow
def test_promote_false_with_no_champion_registers_and_names_no_champion(workdir, scored, monkeypatch):
    model = _trained(workdir, "a", 0)
    scored(model, 0.1)
    got = _evaluate(monkeypatch, model, promote=False)
    assert got["version"] == 1 and not got["promoted"] and got["champion_version"] is None
    # so there is nothing to package: one line that says why (`make estimate` in a fresh clone met a traceback)
    from pipeline.stages import package

    monkeypatch.setattr(sys, "argv", ["package", "--out", str(workdir / "serving.json")])
    with pytest.raises(SystemExit, match=r"package: faces-\w+-gender has no 'champion' version yet"):
        package.main()
    assert not (workdir / "serving.json").exists()


@pytest.mark.slow
def test_a_champion_that_rescores_to_nan_is_replaced_and_a_nan_model_never_wins(workdir, scored, monkeypatch):
    constant, real, constant2 = _trained(workdir, "a", 0), _trained(workdir, "b", 1), _trained(workdir, "c", 2)
    scored(constant, None), scored(real, 0.5), scored(constant2, None)
    first = _evaluate(monkeypatch, constant)
    assert first["promoted"]                              # no champion yet: even a constant model serves
    second = _evaluate(monkeypatch, real)
    assert second["promoted"] and second["champion_version"] == 2
    third = _evaluate(monkeypatch, constant2)
    assert not third["promoted"] and third["champion_version"] == 2
