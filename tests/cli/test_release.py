"""pipeline/cli/release.py: a run's served models in one folder, checked by its sums, replaced whole or not at all."""
import json
import subprocess
import sys

import pytest

from pipeline.cli.release import release, verify
from pipeline.stages.package import export_archives, save_bundle

from conftest import CENTRE, DEFAULT_EXECUTION, ROOT, TEST_SERVING, serving, tiny_bundle, venv_env


def _run(root, suffix: str) -> dict:
    """A finished run under `root`: reports, serving.json and the package stage's archives."""
    serving = {}
    for task in ("gender", "rating"):
        bundle = tiny_bundle(root / "models" / task / "model.pt", task)
        (root / "reports/eval" / task).mkdir(parents=True, exist_ok=True)
        metric = {"gender": {"accuracy": 0.97, "roc_auc": 0.99, "ci95": {"accuracy": [0.95, 0.99]}},
                  "rating": {"pearson": 0.81, "mae": 0.3}}[task]
        (root / "reports/eval" / task / "metrics.json").write_text(json.dumps(metric))
        (root / "reports/eval" / task / "report.md").write_text("# report\n")
        (root / "reports/eval" / task / "groups.json").write_text("{}\n")
        meta = {"image_size": 32, "tta_flip": True, "serving": TEST_SERVING, "preprocess": CENTRE,
                "execution": DEFAULT_EXECUTION}
        bm = save_bundle(f"rel{suffix}-{task}", bundle, {"mlflow_version": "1"}, meta)
        serving[task] = {"tag": str(bm.tag), "source": "scut", "weights": "split"}
    (root / "models" / "serving.json").write_text(json.dumps(serving))
    export_archives([e["tag"] for e in serving.values()], root / "models" / "bento")
    return serving


def test_a_release_holds_the_archives_reports_card_and_sums(tmp_path):
    serving = _run(tmp_path / "run", "a")
    files = release(tmp_path / "run", tmp_path / "out")
    names = {p.relative_to(tmp_path / "out").as_posix() for p in files}
    assert names == {"serving.json", "README.md", "SHA256SUMS", "rela-gender.bentomodel", "rela-rating.bentomodel",
                     *[f"{t}/{f}" for t in ("gender", "rating") for f in ("metrics.json", "groups.json", "report.md")]}
    assert json.loads((tmp_path / "out" / "serving.json").read_text()) == serving
    card = (tmp_path / "out" / "README.md").read_text()
    assert "non-commercial research only" in card and "accuracy 0.9700 (95 % CI 0.950–0.990)" in card
    assert "pearson 0.8100" in card and serving["rating"]["tag"] in card
    verify(tmp_path / "out")


def test_a_changed_or_missing_file_fails_the_check(tmp_path):
    _run(tmp_path / "run", "b")
    release(tmp_path / "run", tmp_path / "out")
    (tmp_path / "out" / "relb-rating.bentomodel").write_bytes(b"not the archive")
    with pytest.raises(ValueError, match="relb-rating.bentomodel"):
        verify(tmp_path / "out")
    (tmp_path / "out" / "relb-rating.bentomodel").unlink()
    p = subprocess.run([sys.executable, "-m", "pipeline.cli.release", "--out", str(tmp_path / "out"), "--verify"],
                       cwd=ROOT, env=venv_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "relb-rating.bentomodel is missing" in p.stderr


def test_a_failed_release_leaves_the_previous_folder_whole(tmp_path):
    _run(tmp_path / "run", "c")
    out = tmp_path / "out"
    release(tmp_path / "run", out)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (tmp_path / "run" / "reports/eval/rating/report.md").unlink()      # the next run is incomplete
    with pytest.raises(FileNotFoundError):
        release(tmp_path / "run", out)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
@pytest.mark.integration
def test_the_published_real_face_release_serves_with_one_command_from_an_empty_store(tmp_path):
    """`make serve RELEASE=real` as on a fresh clone: an empty BentoML store, the release's sums checked,
    its archives imported, the real-photo models answering with their face step."""
    import httpx

    release_dir = ROOT / "release" / "real"
    serving_json = json.loads((release_dir / "serving.json").read_text())
    assert {e["source"] for e in serving_json.values()} == {"real"}
    verify(release_dir)
    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "FACES_WORKERS": "1"}
    with serving(cmd=lambda port: ["make", "-s", "serve", "RELEASE=real", "HOST=127.0.0.1", f"PORT={port}"],
                 env=env, ready_s=180) as (url, _):
        photo = (ROOT / "service" / "example.jpg").read_bytes()
        r = httpx.post(f"{url}/predict", files={"image": ("example.jpg", photo, "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["source"] == "real" and body["face"]["crop"] == "face" and 1 <= body["rating"] <= 5
    stored = {p.name for p in (tmp_path / "bentoml" / "models").iterdir()}
    assert stored == {e["tag"].split(":")[0] for e in serving_json.values()}
