"""pipeline/stages/params.py: the first stage fails in one line on a params typo, before any other runs."""
import subprocess
import sys

import yaml

from conftest import ROOT


def _run(tmp_path, params: dict):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", "pipeline.stages.params", "--params", str(tmp_path / "params.yaml"),
                           "--out", str(tmp_path / "ok.txt")], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_valid_params_write_the_marker_the_other_stages_wait_for(tmp_path):
    p = _run(tmp_path, yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert p.returncode == 0 and (tmp_path / "ok.txt").read_text().startswith("params.yaml matches the schema")


def test_a_typo_fails_in_one_line_and_writes_nothing(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["gender"]["epochz"] = 3
    p = _run(tmp_path, params)
    assert p.returncode != 0 and "epochz" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ok.txt").exists()
