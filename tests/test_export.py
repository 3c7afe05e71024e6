"""pipeline/export.py: a run's results in one folder, replaced whole or not at all."""
import json

import pytest

from pipeline.export import export
from pipeline.package import save_bundle

from conftest import CENTRE, DEFAULT_EXECUTION, TEST_SERVING, tiny_bundle


def _run(root, tag_suffix: str) -> dict:
    """A finished run's files under `root` and its two packaged models in the test store."""
    serving = {}
    for task in ("gender", "rating"):
        bundle = tiny_bundle(root / "models" / task / "model.pt", task)
        (root / "models" / task / "history.json").write_text("[]\n")
        tiny_bundle(root / "models" / task / "final.pt", task, seed=1)         # the refit on every photo
        (root / "models" / task / "final.json").write_text('{"enabled": true}\n')
        (root / "reports" / "eval" / task).mkdir(parents=True, exist_ok=True)
        (root / "reports" / "eval" / task / "metrics.json").write_text(json.dumps({"run": tag_suffix}))
        (root / "reports" / "eval" / task / "report.md").write_text("# report\n")
        (root / "reports" / "eval" / task / "groups.json").write_text("{}\n")
        meta = {"image_size": 32, "tta_flip": True, "serving": TEST_SERVING, "preprocess": CENTRE,
                "execution": DEFAULT_EXECUTION}
        bm = save_bundle(f"exp{tag_suffix}-{task}", bundle, {"mlflow_version": "1"}, meta)
        serving[task] = {"tag": str(bm.tag)}
    (root / "models" / "serving.json").write_text(json.dumps(serving))
    return serving


def test_export_writes_bundles_metrics_and_bentoml_exports_in_one_folder(tmp_path):
    serving = _run(tmp_path / "run", "a")
    files = export(tmp_path / "run" / "models" / "serving.json", tmp_path / "out", root=tmp_path / "run")
    names = {p.relative_to(tmp_path / "out").as_posix() for p in files}
    assert names == {"serving.json", "expa-gender.bentomodel", "expa-rating.bentomodel",
                     *[f"{t}/{f}" for t in ("gender", "rating") for f in ("model.pt", "history.json", "final.pt",
                                                                         "final.json", "metrics.json", "groups.json", "report.md")]}
    assert json.loads((tmp_path / "out" / "serving.json").read_text()) == serving
    assert (tmp_path / "out" / "expa-rating.bentomodel").stat().st_size > 1000


def test_a_failed_export_leaves_the_previous_folder_whole(tmp_path):
    _run(tmp_path / "run", "b")
    out = tmp_path / "out"
    export(tmp_path / "run" / "models" / "serving.json", out, root=tmp_path / "run")
    before = sorted(p.name for p in out.rglob("*"))
    (tmp_path / "run" / "reports" / "eval" / "rating" / "report.md").unlink()      # the next run is incomplete
    with pytest.raises(FileNotFoundError):
        export(tmp_path / "run" / "models" / "serving.json", out, root=tmp_path / "run")
    assert sorted(p.name for p in out.rglob("*")) == before
