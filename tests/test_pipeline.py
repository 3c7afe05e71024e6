"""End to end: `dvc repro` of the data stages in a temp copy of the repo (real dvc, GX, MLflow)."""
import json
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from agreement import AGREEMENT, service_agrees_with_evaluate

from pipeline.core.data import read_names

from conftest import TINY, TINY_TASK, copy_repo, run


@pytest.mark.slow
@pytest.mark.integration
def test_data_stages_run_then_report_nothing_to_do(tmp_path):
    repo = copy_repo(tmp_path, TINY)
    out = run(["dvc", "repro", "split"], repo)
    assert "ingest synthetic: 48 rows in = 48 kept + 0 quarantined" in out
    assert "combine: 48 photos from 1 source(s): synthetic 48" in out
    images = np.load(repo / "data/ingested/images.npy", mmap_mode="r")
    meta = pd.read_parquet(repo / "data/ingested/meta.parquet")
    assert images.shape == (48, 32, 32, 3) and len(meta) == 48
    assert json.loads((repo / "reports/gx/summary.json").read_text())["success"] is True
    assert (repo / "reports/gx/data_docs/synthetic/index.html").is_file()
    parts = {p: read_names(repo / f"data/split/{p}.txt") for p in ("train", "val", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(meta["filename"])
    again = run(["dvc", "repro", "split"], repo)
    assert "Data and pipelines are up to date" in again
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["faces"])
    assert sorted(runs["tags.stage"]) == ["combine", "ingest-synthetic", "split", "synth", "validate"]  # the check logs nothing
    assert set(runs.loc[runs["tags.stage"] == "split", "tags.data_hash"]) != {"unknown"}
    # a params change only the split reads reruns the check (same output) and the split, nothing upstream
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["split"]["seed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    out = run(["dvc", "repro", "split"], repo)
    assert "Running stage 'params'" in out and "Running stage 'split'" in out
    assert "Running stage 'ingest@0'" not in out and "Running stage 'validate'" not in out
    # a typo (as `dvc exp run -S train.gender.epoch=3` writes it) fails in one line, before any stage
    # removes its outputs
    import subprocess

    from conftest import venv_env

    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["train"]["gender"]["epoch"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    p = subprocess.run(["dvc", "repro", "split"], cwd=repo, env=venv_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0
    assert "params: params.train.gender: unknown keys ['epoch']" in p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert (repo / "data/ingested/images.npy").is_file() and (repo / "data/split/train.txt").is_file()


@pytest.mark.slow
@pytest.mark.integration
def test_too_much_quarantine_fails_the_stage_with_a_clear_message(tmp_path):
    repo = copy_repo(tmp_path, TINY)
    run(["dvc", "repro", "synth"], repo)
    for p in sorted((repo / "data/synthetic/images").iterdir())[:5]:
        p.write_bytes(b"")                       # 5 / 48 = 10 % > 2 %
    import subprocess

    from conftest import venv_env

    p = subprocess.run(["python", "-m", "pipeline.stages.ingest", "--source", "synthetic", "--out", "data/sources/synthetic",
                        "--report", "r.json"], cwd=repo, env=venv_env(), capture_output=True, text=True)
    assert p.returncode != 0
    assert "ingest synthetic: FAILED - 10.4% of the rows were quarantined" in p.stderr
    assert "empty file" in p.stdout
    q = pd.read_csv(repo / "data/sources/synthetic/quarantine.csv")
    assert len(q) == 5 and set(q["reason"]) == {"empty file"}


@pytest.fixture
def mlflow_server():
    """Starts `mlflow server` on a free loopback port in its own process group; stops the group."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import free_port

    procs = []

    def start(db: str) -> str:
        port = free_port()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        procs.append(subprocess.Popen(
            [f"{os.path.dirname(sys.executable)}/mlflow", "server", "--backend-store-uri", db, "--host",
             "127.0.0.1", "--port", str(port), "--workers", "1"], env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                return url
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not come up in 60 s")

    yield start
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)


def _search_runs(url: str, experiment: str) -> list[dict]:
    import urllib.request

    def post(path, body):
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=30).read())

    import urllib.parse
    exp = json.loads(urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?"
                                            + urllib.parse.urlencode({"experiment_name": experiment})).read())
    return post("runs/search", {"experiment_ids": [exp["experiment"]["experiment_id"]],
                                "filter": "tags.stage LIKE 'train-%'", "max_results": 100})["runs"]


@pytest.mark.slow
@pytest.mark.integration
def test_full_pipeline_and_an_experiment_show_up_as_comparable_mlflow_runs(tmp_path, mlflow_server):
    repo = copy_repo(tmp_path, TINY)
    out = run(["dvc", "repro"], repo)
    assert "evaluate gender:" in out and "evaluate rating:" in out
    gender = json.loads((repo / "reports/eval/gender/metrics.json").read_text())
    assert 0 <= gender["accuracy"] <= 1 and gender["registry"]["promoted"] is True
    assert "337,510" in (repo / "reports/params/params.md").read_text()
    assert {"confusion.png", "curves.png", "predictions.csv", "report.md"} <= \
        {p.name for p in (repo / "reports/eval/gender").iterdir()}
    service_agrees_with_evaluate(repo)
    # a profile runs as a DVC experiment (what `make repro PROFILE=...` runs) and leaves its values in params.yaml
    (repo / "profiles" / "longer.yaml").write_text("train:\n  gender:\n    epochs: 3\n")
    out = run([sys.executable, "-m", "pipeline.cli.profile", "--profile", "profiles/longer.yaml"], repo)
    assert "dvc exp run -n longer-" in out and " -S train.gender.epochs=3" in out
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["gender"]["epochs"] == 3
    runs = _search_runs(mlflow_server(f"sqlite:///{repo}/mlflow.db"), "faces")
    by_task = {}
    for r in runs:
        tags = {t["key"]: t["value"] for t in r["data"]["tags"]}
        metrics = {m["key"]: m["value"] for m in r["data"]["metrics"]}
        by_task.setdefault(tags["task"], []).append(metrics)
    assert len(by_task["gender"]) == 2 and len(by_task["rating"]) == 1
    names = sorted(r["info"]["run_name"] for r in runs)
    assert names[0] == "train-gender synthetic convnet" and names[1].startswith("train-gender synthetic convnet (longer-")
    assert all("test_accuracy" in m and "val_accuracy" in m for m in by_task["gender"])
    assert "test_pearson" in by_task["rating"][0]



@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("start, fraction", [("scratch", 1.0), ("split", 0.5)])
def test_refit_on_every_photo_is_what_package_serves_while_evaluate_scores_the_split_model(tmp_path, start, fraction):
    """refit.enabled: the served weights learnt from train + val + test (in as many steps as the split
    run, or from the split model in a fraction of them, as the profiles do); the registry's version and
    its test metrics are the split model's; the service answers exactly what the refit bundle predicts."""
    import subprocess

    import torch

    from conftest import venv_env

    repo = copy_repo(tmp_path, {**TINY, "train": {"gender": {**TINY_TASK, "epochs": 3}, "rating": TINY_TASK},
                                "refit": {"enabled": True, "budget": "steps", "start": start, "fraction": fraction,
                                          "lr_scale": 0.2 if start == "split" else 1.0}})
    run(["dvc", "repro"], repo)
    sizes = json.loads((repo / "reports/split.json").read_text())
    for task, split_epochs in (("gender", 3), ("rating", 2)):
        info = json.loads((repo / f"models/{task}/final.json").read_text())
        final = torch.load(repo / f"models/{task}/final.pt", weights_only=True)
        split = torch.load(repo / f"models/{task}/model.pt", weights_only=True)
        n_all = sizes["train"] + sizes["val"] + sizes["test"]
        assert final["trained_on"]["photos"] == info["photos"] == n_all
        assert split["trained_on"]["photos"] == sizes["train"]
        assert info["epochs"] == max(1, round(split_epochs * sizes["train"] / n_all * fraction))
        assert info["start"] == final["trained_on"]["start"] == start
        assert not all(torch.equal(final["state_dict"][k], v) for k, v in split["state_dict"].items())
        assert not (repo / f"models/{task}/final_checkpoint.pt").exists()
        served = json.loads((repo / "models/serving.json").read_text())[task]
        assert served["weights"] == f"refit-{info['sha256'][:12]}"
        metrics = json.loads((repo / f"reports/eval/{task}/metrics.json").read_text())
        assert metrics["registry"]["version"] == int(served["mlflow_version"])
    if start == "split":       # `make refit-check` on this run: its split-model row is evaluate's score
        p = subprocess.run([sys.executable, "bench/refit_check.py"], cwd=repo, capture_output=True, text=True,
                           timeout=600, env=venv_env())
        assert p.returncode == 0, p.stderr[-3000:]
        check = json.loads((repo / "reports/refit-check.json").read_text())
        assert check["refit"]["fraction"] == fraction
        for task, key in (("gender", "accuracy"), ("rating", "mae")):       # (a tiny run's Pearson may be nan)
            rows = check["tasks"][task]
            scored = json.loads((repo / f"reports/eval/{task}/metrics.json").read_text())[key]
            assert rows["split model (train)"][key] == pytest.approx(scored, abs=1e-4)
            refit = rows[f"refit from split x{fraction:g} (train + val)"]
            assert refit["photos"] == sizes["train"] + sizes["val"] and refit["epochs"] >= 1 and key in refit
    p = subprocess.run([sys.executable, "-c", AGREEMENT, "data/synthetic/images"], cwd=repo, capture_output=True,
                       text=True, timeout=300, env=venv_env())
    assert p.returncode == 0, p.stderr[-3000:]
    answers = json.loads(p.stdout.strip().splitlines()[-1])
    p = subprocess.run([sys.executable, "-c", FINAL_SCORES], cwd=repo, capture_output=True, text=True, timeout=300,
                       env=venv_env())
    assert p.returncode == 0, p.stderr[-3000:]
    want = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(answers) == set(want["rating"]) and answers
    for name, (p_male, r, _) in answers.items():
        assert p_male == pytest.approx(want["gender"][name], abs=1e-5), name
        assert r == pytest.approx(want["rating"][name], abs=1e-5), name


# what evaluate's scoring gives for each test photo with the refit bundles (final.pt) instead of model.pt
FINAL_SCORES = """
import json
from pathlib import Path
from pipeline.core.config import load_params
from pipeline.core.data import load_parts, read_names
from pipeline.core.model import predict, serving_model
p = load_params()
test = load_parts(Path("data/ingested"), Path("data/split"), ("test",))["test"]
out = {}
for task in ("gender", "rating"):
    model, policy = serving_model(Path(f"models/{task}/final.pt"), task)
    y = predict(model, test.images, p.evaluate.batch_size, p.evaluate.tta_flip, policy)
    out[task] = dict(zip(test.meta["filename"], map(float, y)))
print(json.dumps(out))
"""

@pytest.mark.slow
@pytest.mark.integration
def test_dvc_repro_killed_mid_training_and_mid_evaluation_then_finishes_with_no_cleanup(tmp_path):
    """kill -9 of the whole `dvc repro` process group at two points; a plain rerun then completes,
    and what it packaged passes the service's start-up check."""
    import os
    import signal
    import subprocess
    import time

    from conftest import venv_env

    tiny = {**TINY, "train": {t: {**TINY["train"][t], "epochs": 4} for t in ("gender", "rating")}}
    repo = copy_repo(tmp_path, tiny)
    for marker in ("models/gender/checkpoint.pt", "reports/eval/gender/metrics.json"):
        p = subprocess.Popen(["dvc", "repro"], cwd=repo, env=venv_env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not (repo / marker).exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, f"dvc repro ended before {marker} appeared"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    out = run(["dvc", "repro"], repo, timeout=900)
    assert "package gender" in out and "package rating" in out
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)     # run() checks the return code
    serving = json.loads((repo / "models/serving.json").read_text())
    check = ("import sys; from service.limits import check_models; import bentoml; print(check_models("
             "{t: bentoml.models.get(sys.argv[i + 1]) for i, t in enumerate(('gender', 'rating'))}))")
    assert "Served(contract=Contract(" in run([sys.executable, "-c", check, serving["gender"]["tag"], serving["rating"]["tag"]], repo)
