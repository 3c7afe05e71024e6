"""bench/gpu_check.py (`make gpu-check`) in its CPU dry run: every section runs and reports, so a lent GPU
machine runs the same script without edits; the CUDA branch itself runs only there."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_the_gpu_check_runs_every_section_on_the_cpu_and_reports_them(tmp_path):
    out = tmp_path / "gpu-check.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench/gpu_check.py"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    r = json.loads(out.read_text())
    assert r["dry_run"] and r["ok"] and r["device"]["device"] == "cpu"
    for task in ("gender", "rating"):
        losses = r["train"][task]["losses"]
        assert len(losses) == 2 and losses[1] < losses[0]
        assert r["profile"][task]["photos_per_s"] > 0
    # the collectives fit uses, through torchrun, as the training group's backends run them
    assert r["ddp"] == {**r["ddp"], "mean": 2.0, "broadcast": 0.25, "object_ok": True, "backend": "gloo"}
    assert r["resume"]["resumed"] == r["resume"]["straight"] and r["resume"]["dropout"] > 0   # exact on the CPU
    assert r["export"]["served_on"] == "cpu" and r["export"]["max_probability_difference"] < 0.05


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is here: the real check would run")
def test_without_a_gpu_the_real_check_says_how_to_dry_run():
    p = subprocess.run([sys.executable, str(ROOT / "bench/gpu_check.py")], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "--dry-run" in p.stderr
