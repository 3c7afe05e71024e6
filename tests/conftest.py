"""Shared fixtures: tiny synthetic face sets and photos that are broken on purpose."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest

from pipeline.tracking import TELEMETRY_OFF

os.environ.update(TELEMETRY_OFF)
# Tests get their own BentoML model store, never the user's ~/bentoml (set before bentoml is imported).
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-test-")
ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "facescore"


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """40 synthetic faces (64 px) in the course layout; read-only for the tests that use it."""
    from pipeline.stages.synth import generate

    out = tmp_path_factory.mktemp("faces")
    generate(out, count=40, size=64, seed=1, noise=0.25)
    return out


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "FaceScore.csv").is_file():
        pytest.skip(f"real photos not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(autouse=True)
def no_outer_tracking_uri():
    """Every test starts without MLFLOW_TRACKING_URI: neither the developer's (a test must not log to
    their server) nor one an earlier test's in-process `mlflow.set_tracking_uri` exported (MLflow
    writes it to os.environ, and it wins over a params.yaml). A test that wants one sets it."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def venv_env() -> dict[str, str]:
    """The environment with the venv's tools (dvc, python, mlflow) first on PATH, without the
    MLFLOW_TRACKING_URI that an in-process `mlflow.set_tracking_uri` of an earlier test exported (a
    stage would log there instead of its copy's params.yaml; `run(..., env=...)` passes one on purpose)."""
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def run(cmd: list[str], cwd: Path, timeout: int = 600, env: dict[str, str] | None = None) -> str:
    """Runs a command with the venv's tools first on PATH (plus `env`); fails the test with its output."""
    import subprocess

    p = subprocess.run(cmd, cwd=cwd, env={**venv_env(), **(env or {})}, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


def copy_repo(dest: Path, params: dict) -> Path:
    """Copies the repo's source files (what git sees, no outputs) to `dest` as a fresh git repo,
    with `params` (section -> {key: value}) merged into its params.yaml."""
    import shutil
    import subprocess

    import yaml

    from pipeline.core.config import merge

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    raw = merge(yaml.safe_load((dest / "params.yaml").read_text()), params)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for stale in ("dvc.lock",):
        (dest / stale).unlink(missing_ok=True)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True)
    return dest


TINY_TASK = {"widths": [8, 16], "epochs": 2, "batch_size": 16}
TINY = {"synth": {"count": 48, "size": 48}, "ingest": {"image_size": 32},
        "train": {"gender": TINY_TASK, "rating": TINY_TASK}}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def small_parts(tmp_path_factory):
    """300 synthetic faces at 32 px, split 60/20/20: enough for a model to learn in seconds."""
    from pipeline.core.sources import read_labels
    from pipeline.stages.ingest import ingest
    from pipeline.stages.synth import generate

    out = tmp_path_factory.mktemp("small")
    generate(out, count=300, size=64, seed=2, noise=0.1)
    res = ingest(read_labels(out / "FaceScore.csv", "facescore"), out / "images", 32, 10**8)
    return split_parts(res, 0.2, 0.2)


def split_parts(res, val: float, test: float) -> dict:
    """An ingest result -> {train, val, test} Parts, stratified (gender x group) with seed 0."""
    from pipeline.core.data import Part
    from pipeline.stages.split import stratified

    row = {f: i for i, f in enumerate(res.meta["filename"])}
    parts = {}
    for name, files in stratified(res.meta, val, test, seed=0).items():
        idx = [row[f] for f in files]
        parts[name] = Part(res.images[idx], res.meta.iloc[idx].reset_index(drop=True))
    return parts


def tiny_bundle(path: Path, task: str, size: int = 32, seed: int = 0) -> Path:
    """A random-weight model bundle in the train stage's format (for serving tests)."""
    import torch

    from pipeline.core.model import ModelConfig, build_model

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig("convnet", (4, 8), 0.0, size)
    net = build_model(cfg, [task])
    if task == "rating":
        # centred on the 1-5 scale: random weights alone answer ~0, clamped to 1.0 for every photo,
        # and a test comparing two photos' ratings would compare 1.0 with 1.0
        with torch.no_grad():
            net.heads["rating"].bias.fill_(3.0)
            net.heads["rating"].weight.mul_(20.0)
    torch.save({"state_dict": net.state_dict(), "model_config": {**cfg.__dict__, "widths": list(cfg.widths)},
                "heads": [task], "task": task}, path)
    return path


# the serving bounds of the test models (params.yaml `package` without the name prefix; smaller numbers)
TEST_SERVING = {"max_upload_mb": 1, "max_request_mb": 3, "max_pixels": 4_000_000, "max_request_pixels": 6_000_000,
                "max_batch_files": 4, "max_inflight": 8, "retry_after_s": 1, "read_timeout_s": 15,
                "decode_threads": 1, "decode_cpu_s": 1.0, "request_decode_cpu_s": 4.0, "max_reading": 128,
                "max_buffered_mb": 256, "header_timeout_s": 10, "max_header_kb": 16, "keep_alive_s": 5,
                "max_connections": 512}
CENTRE = {"crop": "centre"}   # the crop contract of centre-crop models
DEFAULT_EXECUTION = {"precision": "auto", "channels_last": True}   # params.yaml's train.precision / channels_last


@pytest.fixture(scope="session")
def served_models(tmp_path_factory) -> dict[str, str]:
    """Two tiny models in the test BentoML store; sets FACES_*_MODEL so service.service serves them."""
    from pipeline.stages.package import save_bundle

    tmp = tmp_path_factory.mktemp("bundles")
    tags = {}
    for task in ("gender", "rating"):
        meta = {"image_size": 32, "tta_flip": True, "serving": TEST_SERVING, "preprocess": CENTRE,
                "execution": DEFAULT_EXECUTION}
        bm = save_bundle(f"test-{task}", tiny_bundle(tmp / f"{task}.pt", task), {"mlflow_version": "7", "source": "synthetic", "weights": "split"}, meta)
        tags[task] = str(bm.tag)
        os.environ[f"FACES_{task.upper()}_MODEL"] = tags[task]
    return tags


@pytest.fixture(scope="session")
def client(served_models):
    """service.service's ASGI app (to_asgi) under Starlette's TestClient, built once per test process:
    BentoML registers its Prometheus metrics per process, so a second app would fail to start."""
    from starlette.testclient import TestClient

    from service.service import asgi

    with TestClient(asgi()) as c:
        yield c


@pytest.fixture(scope="session")
def server(server_process) -> str:
    return server_process[0]


@pytest.fixture(scope="session")
def server_process(served_models):
    """`bentoml serve` of the test models on a free loopback port: (url, pid)."""
    with serving() as started:
        yield started


@contextlib.contextmanager
def serving(stop_timeout: float = 30, cmd=None, env: dict[str, str] | None = None, ready_s: float = 60,
            own_home: bool = False):
    """`bentoml serve` (or `cmd(port)`, e.g. a make target) in a subprocess on a free loopback port, in
    its own process group -> (url, pid); SIGTERM on exit, SIGKILL if it has not stopped after
    `stop_timeout` s. `own_home`: a BentoML home of its own holding a copy of the test store's models.
    BentoML keeps its Prometheus files under BENTOML_HOME and clears them when a server starts, so a
    second server on the session's home would freeze the session server's /metrics."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    env = dict(env or {})
    if own_home:
        import shutil
        import tempfile

        home = Path(tempfile.mkdtemp(prefix="bentoml-own-"))
        shutil.copytree(Path(os.environ["BENTOML_HOME"]) / "models", home / "models")
        env["BENTOML_HOME"] = str(home)
    port = free_port()
    bentoml = os.path.join(os.path.dirname(sys.executable), "bentoml")
    argv = cmd(port) if cmd else [bentoml, "serve", "service.service:Faces", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(int(ready_s * 2)):
            try:
                if urllib.request.urlopen(f"{url}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"{' '.join(argv)} did not become ready in {ready_s:.0f} s")
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:          # graceful shutdown stuck: kill, and let the caller see it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            raise


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """FACES_NO_SKIP=1: a module that skips while being collected (a module-level skip or
    importorskip) fails too, instead of dropping all its tests from CI unseen."""
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("FACES_NO_SKIP") and rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = f"FACES_NO_SKIP: {collector.nodeid} skipped at collection ({rep.longrepr}); CI is meant to run it"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """FACES_NO_SKIP=1 (.ci/run sets it): a skipped test fails, so a missing tool (Chromium,
    schemathesis) cannot make CI green by skipping what it was meant to run. Only the `realdata`
    tests may skip, and only where the photos are absent."""
    outcome = yield
    rep = outcome.get_result()
    if not os.environ.get("FACES_NO_SKIP") or not rep.skipped or hasattr(rep, "wasxfail"):
        return
    if item.get_closest_marker("realdata") and not (REAL_DATA / "FaceScore.csv").is_file():
        return
    rep.outcome = "failed"
    rep.longrepr = f"FACES_NO_SKIP: this test skipped ({rep.longrepr}); CI is meant to run it"


def imported(path: Path) -> set[str]:
    """Dotted names a module imports anywhere in its source, functions included (`from pipeline.core import
    data` -> pipeline.core.data). The architecture and dvc.yaml tests read imports through this."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            package = (ROOT / node.module.replace(".", "/")).is_dir()
            out |= {f"{node.module}.{a.name}" for a in node.names} if package else {node.module}
    return out
