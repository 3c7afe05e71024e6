"""End to end: `dvc repro` of the data stages in a temp copy of the repo (real dvc, GX, MLflow)."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, copy_repo, run


@pytest.mark.slow
@pytest.mark.integration
def test_data_stages_run_then_report_nothing_to_do(tmp_path):
    repo = copy_repo(tmp_path, TINY)
    out = run(["dvc", "repro", "split"], repo)
    assert "ingest: 48 rows in = 48 kept + 0 quarantined" in out
    images = np.load(repo / "data/ingested/images.npy", mmap_mode="r")
    meta = pd.read_parquet(repo / "data/ingested/meta.parquet")
    assert images.shape == (48, 32, 32, 3) and len(meta) == 48
    assert json.loads((repo / "reports/gx/summary.json").read_text())["success"] is True
    assert (repo / "reports/gx/data_docs/index.html").is_file()
    parts = {p: (repo / f"data/split/{p}.txt").read_text().split() for p in ("train", "val", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(meta["filename"])
    again = run(["dvc", "repro", "split"], repo)
    assert "Data and pipelines are up to date" in again
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["faces"])
    assert sorted(runs["tags.stage"]) == ["ingest", "split", "synth", "validate"]
    assert set(runs.loc[runs["tags.stage"] == "split", "tags.data_hash"]) != {"unknown"}


@pytest.mark.slow
@pytest.mark.integration
def test_too_much_quarantine_fails_the_stage_with_a_clear_message(tmp_path):
    repo = copy_repo(tmp_path, TINY)
    run(["dvc", "repro", "synth"], repo)
    for p in sorted((repo / "data/synthetic/images").iterdir())[:5]:
        p.write_bytes(b"")                       # 5 / 48 = 10 % > 2 %
    import subprocess
    import os
    import sys

    env = {**os.environ, "PATH": f"{sys.executable.rsplit('/', 1)[0]}:{os.environ['PATH']}"}
    p = subprocess.run(["python", "-m", "pipeline.ingest", "--out", "data/ingested", "--report", "r.json"],
                       cwd=repo, env=env, capture_output=True, text=True)
    assert p.returncode != 0
    assert "FAILED - 10.4% of the rows were quarantined" in p.stderr
    assert "empty file" in p.stdout
    q = pd.read_csv(repo / "data/ingested/quarantine.csv")
    assert len(q) == 5 and set(q["reason"]) == {"empty file"}
