"""More than one machine, on loopback: the stages logging to a live `mlflow server` (PostgreSQL +
S3 artifacts, deploy/stack.py), the DVC remote over the S3 API, a second clone that pulls and
reruns nothing, and concurrent promotions (pipeline/tracking.py's promotion lock)."""
import contextlib
import json
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, TINY, copy_repo, free_port, run


@pytest.fixture
def model(tmp_path) -> str:
    """A registered-model name of this test's own: the server is shared by the module's tests."""
    return f"race-{tmp_path.name[-12:]}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from deploy.stack import Stack, pg_bin

    try:
        pg_bin("initdb")
    except FileNotFoundError:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    s = Stack(tmp_path_factory.mktemp("stack"), free_port(), free_port(), free_port()).start()
    login = pytest.MonkeyPatch()            # every client in these tests logs in as the pipeline's user
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        login.setenv(k, s.env()[k])
    yield s
    login.undo()
    s.stop()


@pytest.mark.slow
def test_the_tracking_server_refuses_a_write_without_a_login_and_its_database_a_passwordless_role(stack):
    import psycopg2
    import requests

    create = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/create"
    for auth in (None, ("pipeline", "wrong"), ("nobody", "x")):
        r = requests.post(create, json={"name": "intruder"}, auth=auth, timeout=30)
        assert r.status_code == 401, (auth, r.status_code, r.text[:200])
    r = requests.get(f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search", params={"max_results": 5}, timeout=30)
    assert r.status_code == 401                                        # reading needs a login too
    env = stack.env()
    user = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    r = requests.post(create, json={"name": "logged-in"}, auth=user, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.post(f"{stack.tracking_uri}/api/2.0/mlflow/users/create", auth=user, timeout=30,
                      json={"username": "mallory", "password": "x" * 12})
    assert r.status_code == 403                                        # the pipeline's user manages no users
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="mlflow", dbname="mlflow")
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="postgres", dbname="postgres")
    conn = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="mlflow", dbname="mlflow",
                            password=stack.passwords["pg-mlflow"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False, False, False)
    conn.close()


def _params(tmp_path: Path):
    import dataclasses

    from pipeline.core.config import load_params

    p = load_params(ROOT / "params.yaml")
    return dataclasses.replace(p, tracking=dataclasses.replace(p.tracking, uri=f"sqlite:///{tmp_path}/m.db"))


def _promote_at_once(params, tmp_path: Path, model: str) -> dict[float, dict]:
    """A champion of metric 0.5, then 0.9 and 0.7 registering and promoting at once, ordered by events,
    not by sleeps: 0.7 reads the champion first and holds its decision until 0.9 has finished (or 5 s
    have passed); 0.9 re-scores only after 0.7 has read. Without a lock 0.9 promotes inside 0.7's window
    and 0.7, still comparing with 0.5, moves the alias last; with it, one waits for the other and
    compares with its result -> metric: its decision. (A bundle's "score" is the number written in it.)"""
    from pipeline import tracking

    read_old, first_done = threading.Event(), threading.Event()

    def attempt(metric: float, barrier=None) -> dict:
        bundle = tmp_path / f"{metric}" / "model.pt"
        bundle.parent.mkdir(parents=True, exist_ok=True)
        bundle.write_text(str(metric))
        with tracking.stage_run(params, "train-rating"):
            tracking.log_artifacts([bundle], "bundle")
            import mlflow

            uri = mlflow.create_external_model(name="bundle").model_uri   # a LoggedModel, no weights logged
        if barrier is not None:
            barrier.wait(timeout=60)

        def rescore(path: Path) -> float:
            value = float(Path(path).read_text())
            if metric == 0.7:
                read_old.set()
                first_done.wait(timeout=5)
            elif metric == 0.9:
                read_old.wait(timeout=5)
            return value

        try:
            return tracking.register_and_promote(uri, model, "pearson", metric, rescore)
        finally:
            if metric == 0.9:
                first_done.set()

    assert attempt(0.5)["promoted"]
    barrier, out = threading.Barrier(2), {}
    threads = [threading.Thread(target=lambda m=m: out.__setitem__(m, attempt(m, barrier))) for m in (0.9, 0.7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


def _champion_metric(model: str) -> float:
    from mlflow import MlflowClient

    return float(MlflowClient().get_model_version_by_alias(model, "champion").tags["test_pearson"])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "server"])
def test_two_promotions_at_once_cannot_both_win(backend, request, tmp_path, monkeypatch, model):
    """Without a lock 0.7 moves the alias last, having compared itself with the old champion (0.5) - the
    next test shows that. With the lock the second compares with the first's result, and 0.9 is the
    champion whichever runs first."""
    if backend == "server":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("stack").tracking_uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = _promote_at_once(_params(tmp_path), tmp_path, model)
    assert set(out) == {0.9, 0.7} and out[0.9]["promoted"]
    assert _champion_metric(model) == 0.9
    from mlflow import MlflowClient

    names = [m.name for m in MlflowClient().search_registered_models()]
    assert model in names and not [n for n in names if ".promotion-lease." in n]   # released


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "server"])
def test_without_the_lock_the_worse_model_wins_the_race(backend, request, tmp_path, monkeypatch, model):
    from pipeline import tracking

    if backend == "server":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("stack").tracking_uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    no_lease = SimpleNamespace(check=lambda: None)
    monkeypatch.setattr(tracking, "promotion_lock", lambda *a, **k: contextlib.nullcontext(no_lease))
    out = _promote_at_once(_params(tmp_path), tmp_path, model)
    assert out[0.9]["promoted"] and out[0.7]["promoted"]          # both "won"
    assert _champion_metric(model) == 0.7                                 # and the worse one holds the alias


def test_the_registry_lease_breaks_a_dead_holder_and_keeps_one_key(tmp_path, monkeypatch):
    """pipeline/core/lease.py on the registry (sqlite): the take, break, cleanup and owner-checked
    release reach the store as core/test_lease.py scripts them."""
    from mlflow import MlflowClient

    from pipeline import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.setup(_params(tmp_path))
    client = MlflowClient()
    dead = "m" + tracking.LEASE_INFIX + "000000004"
    client.create_registered_model(dead, tags={"holder": "killed/1"})
    with pytest.warns(UserWarning, match=f"breaking {dead} held by killed/1"), \
            tracking.promotion_lock(client, "m", holder="c", wait_s=3, stale_s=0.5) as held:
        keys = tracking._Registry(client).holders("m" + tracking.LEASE_INFIX)
        assert list(keys) == ["m" + tracking.LEASE_INFIX + "000000005"] and keys[held.key].startswith("c/")
        held.check()
    assert tracking._Registry(client).holders("m" + tracking.LEASE_INFIX) == {}


@pytest.mark.slow
@pytest.mark.integration
def test_a_second_machine_pulls_the_champion_from_the_s3_remote_and_reruns_nothing(stack, tmp_path):
    """Machine 1: `dvc repro` logging to the tracking server (PostgreSQL, artifacts in S3), then
    `dvc push` to the S3 remote of .dvc/config. Machine 2: a git clone, `dvc pull`, and `dvc repro`
    is up to date; the pulled BentoML archives import into its own store."""
    import boto3
    from mlflow import MlflowClient

    one = copy_repo(tmp_path / "one", TINY)
    env = stack.env()
    run(["dvc", "repro"], one, timeout=900, env=env)
    assert not (one / "mlflow.db").exists() and not (one / "mlartifacts").exists()   # all went to the server
    client = MlflowClient(stack.tracking_uri)
    champ = client.get_model_version_by_alias("faces-synthetic-gender", "champion")
    run_id = champ.tags["run_id"]
    assert client.get_run(run_id).data.tags["stage"] == "train-gender"
    s3 = boto3.client("s3", endpoint_url=stack.s3_url, region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="faces-mlflow", MaxKeys=1000).get("Contents", [])]
    assert any(k.endswith(f"{run_id}/artifacts/bundle/model.pt") for k in keys)
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "run"]):
        subprocess.run(cmd, cwd=one, check=True)
    assert "files pushed" in run(["dvc", "push"], one, env=env)
    assert s3.list_objects_v2(Bucket="faces-dvc", Prefix="cache/")["KeyCount"] > 10

    two = tmp_path / "two"
    subprocess.run(["git", "clone", "-q", str(one), str(two)], check=True)
    assert not (two / "models").exists()
    run(["dvc", "pull"], two, env=env)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], two, env=env)
    out = run(["dvc", "repro"], two, env=env)
    assert "Data and pipelines are up to date" in out and "Running stage" not in out
    serving = json.loads((two / "models/serving.json").read_text())
    home = {**env, "BENTOML_HOME": str(tmp_path / "bentoml-two")}
    out = run(["python", "-m", "pipeline.stages.package", "--import", "models/bento"], two, env=home)
    assert all(entry["tag"] in out for entry in serving.values())
