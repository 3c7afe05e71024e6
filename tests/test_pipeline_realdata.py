"""End to end on real photos (96 SCUT photos copied to a temp folder, never into the repo; skipped where
../shared's data is absent): the face-crop pipeline, and the GPU profile at a tiny budget on the CPU."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agreement import service_agrees_with_evaluate

from conftest import TINY, copy_repo, run, venv_env


def serving_weights(folder: Path) -> dict:
    return {t: e["weights"] for t, e in json.loads((folder / "serving.json").read_text()).items()}


def _scut_subset(real_data: Path, photos: Path, per_prefix: int = 24) -> Path:
    """The first `per_prefix` photos of each of ftw/fty/mtw/mty with their official labels, in a SCUT
    layout under `photos` (a temp folder: the data is never copied into the repo)."""
    (photos / "images").mkdir(parents=True)
    lines = (real_data / "SCUT-FBP5500_labels.txt").read_text().splitlines()
    picked = [ln for prefix in ("ftw", "fty", "mtw", "mty") for ln in [x for x in lines if x.startswith(prefix)][:per_prefix]]
    (photos / "SCUT-FBP5500_labels.txt").write_text("\n".join(picked) + "\n")
    for ln in picked:
        name = ln.split()[0]
        shutil.copy(real_data / "images" / name, photos / "images" / name)
    return photos


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.integration
def test_gpu_profile_runs_on_cpu_at_a_tiny_budget_and_exports_servable_models(real_data, tmp_path):
    """`make gpu-train`'s two commands (the GPU profile as a DVC experiment, then pipeline.cli.release) on
    96 SCUT photos with a tiny budget: one folder with both served models as BentoML archives, their
    metrics and card, that imports into another store and passes the service's start-up check."""
    photos = _scut_subset(real_data, tmp_path / "scut")
    repo = copy_repo(tmp_path / "repo", {"synth": TINY["synth"]})
    tiny = [f"train.{t}.{k}={v}" for t in ("gender", "rating") for k, v in
            (("widths", "[8,16]"), ("epochs", 1), ("patience", 1), ("batch_size", 16))] + ["ingest.image_size=32"]
    cmd = ["python", "-m", "pipeline.cli.profile", "--profile", "scut-gpu", "--data", str(photos)]
    log = run(cmd + [a for s in tiny for a in ("--set", s)], repo, timeout=900)
    assert "face crop" in log and "package rating" in log
    out = tmp_path / "out"
    run(["python", "-m", "pipeline.cli.release", "--out", str(out)], repo)
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        "serving.json", "README.md", "SHA256SUMS", "faces-gender.bentomodel", "faces-rating.bentomodel",
        *[f"{t}/{f}" for t in ("gender", "rating") for f in ("metrics.json", "groups.json", "report.md")]}
    run(["python", "-m", "pipeline.cli.release", "--out", str(out), "--verify"], repo)
    assert json.loads((out / "rating" / "metrics.json").read_text())["registry"]["model"] == "faces-scut-rating"
    final = json.loads((repo / "models/rating/final.json").read_text())   # the profile refits on every photo
    assert final["photos"] == json.loads((repo / "reports/ingest.json").read_text())["kept"] > final["split_photos"]
    assert serving_weights(out) == {t: f"refit-{json.loads((repo / 'models' / t / 'final.json').read_text())['sha256'][:12]}"
                                    for t in ("gender", "rating")}
    home = tmp_path / "other-bentoml"                 # the serving machine's store, not the test session's
    for t in ("gender", "rating"):
        p = subprocess.run(["bentoml", "models", "import", str(out / f"faces-{t}.bentomodel")], cwd=repo,
                           env={**venv_env(), "BENTOML_HOME": str(home)}, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
    serving = json.loads((out / "serving.json").read_text())
    check = ("import sys; from service.limits import check_models; import bentoml; l = check_models("
             "{t: bentoml.models.get(sys.argv[i + 1]) for i, t in enumerate(('gender', 'rating'))}); "
             "print(l.contract.image_size, l.contract.face is not None, l.contract.execution)")
    p = subprocess.run([sys.executable, "-c", check, serving["gender"]["tag"], serving["rating"]["tag"]], cwd=repo,
                       env={**venv_env(), "BENTOML_HOME": str(home)}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("32 True Execution(precision='auto'"), p.stderr[-2000:]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.integration
def test_face_crop_pipeline_on_real_photos_serves_exactly_what_evaluate_scored(real_data, tmp_path):
    """ingest.crop=face end to end on 96 SCUT photos: ingest crops the faces, the crop contract travels
    through train, MLflow and package into the BentoML metadata, and the service, given each test
    photo FILE, finds and crops the face itself and answers exactly what evaluate scored."""
    photos = _scut_subset(real_data, tmp_path / "scut")
    source = {"name": "scut", "reader": "scut", "path": str(photos), "label_file": None, "scale": [1, 5]}
    repo = copy_repo(tmp_path / "repo", {**TINY, "ingest": {"dataset": "scut", "sources": [source],
                                                            "image_size": 32, "crop": "face"}})
    out = run(["dvc", "repro"], repo, timeout=900)
    assert "face crop" in out and "evaluate rating:" in out
    meta = json.loads((repo / "models/serving.json").read_text())
    assert meta["gender"]["tag"]
    service_agrees_with_evaluate(repo, photos / "images", crop="face")
