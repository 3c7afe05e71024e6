
import re

import pytest
import yaml

from pipeline.cli.profile import profile_overrides
from pipeline.core.config import ParamsError

from conftest import ROOT


def test_the_scut_profile_merges_into_valid_params_and_data_replaces_the_path():
    sets = profile_overrides("scut", "/data/my copy", params=ROOT / "params.yaml")
    assert 'ingest.dataset="scut"' in sets
    assert 'ingest.sources=[{name:"scut",reader:"scut",path:"/data/my copy",label_file:null,scale:[1,5]}]' in sets
    assert "train.gender.widths=[24,48,96,192]" in sets
    # every override reads back (as DVC reads -S values: YAML) to the profile's value
    raw = yaml.safe_load((ROOT / "profiles" / "scut.yaml").read_text())
    back = {k: _hydra(v) for k, v in (s.split("=", 1) for s in sets)}
    assert back["train.rating.aux_tasks"] == raw["train"]["rating"]["aux_tasks"]
    assert back["ingest.image_size"] == raw["ingest"]["image_size"]


def test_a_profile_with_a_typo_fails_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  gender:\n    epoch: 3\n")
    with pytest.raises(ParamsError, match="unknown key 'epoch'"):
        profile_overrides(bad, params=ROOT / "params.yaml")
    bad.write_text("ingest:\n  image_size: big\n")
    with pytest.raises(ParamsError, match="ingest.image_size: expected int"):
        profile_overrides(bad, params=ROOT / "params.yaml")


def test_the_profile_command_prints_dvc_exp_run_and_refuses_data_without_a_profile():
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pipeline.cli.profile", "--dry-run"]
    ok = subprocess.run(cmd + ["--profile", "scut", "--data", "/photos"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("dvc exp run -n scut-")       # a named experiment
    assert ' -S ingest.dataset="scut"' in ok.stdout
    assert 'path:"/photos"' in ok.stdout
    bad = subprocess.run(cmd + ["--data", "/photos"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "needs a profile" in bad.stderr


def test_sets_on_top_of_a_profile_win_and_are_checked_like_the_profile():
    sets = profile_overrides("scut-gpu", "/photos", params=ROOT / "params.yaml",
                             sets=["train.rating.epochs=1", "ingest.image_size=32", "train.gender.widths=[4,8]"])
    back = {k: _hydra(v) for k, v in (s.split("=", 1) for s in sets)}
    assert back["train.rating.epochs"] == 1 and back["ingest.image_size"] == 32
    assert back["train.gender.widths"] == [4, 8] and back["train.gender.epochs"] == 60     # the rest: the profile's
    with pytest.raises(ParamsError, match="unknown key 'epochz'"):
        profile_overrides("scut-gpu", params=ROOT / "params.yaml", sets=["train.rating.epochz=1"])
    with pytest.raises(ParamsError, match="expected key.path=value"):
        profile_overrides("scut-gpu", params=ROOT / "params.yaml", sets=["train.rating.epochs"])


def test_the_gpu_profile_differs_from_the_cpu_profile_only_in_budget_not_in_data():
    from pipeline.cli.profile import load_profile

    cpu = load_profile("scut", params=ROOT / "params.yaml")
    gpu = load_profile("scut-gpu", params=ROOT / "params.yaml")
    assert (gpu.ingest.sources, gpu.ingest.crop, gpu.split) == (cpu.ingest.sources, cpu.ingest.crop, cpu.split)
    assert gpu.ingest.image_size > cpu.ingest.image_size and gpu.train.rating.epochs > cpu.train.rating.epochs


def test_the_real_profile_reads_both_sources_and_a_set_can_move_one():
    from pipeline.cli.profile import load_profile

    real = load_profile("real", params=ROOT / "params.yaml")
    assert [(s.name, s.reader, tuple(s.scale)) for s in real.ingest.sources] == [
        ("scut", "scut", (1.0, 5.0)), ("mebeauty", "mebeauty", (1.0, 10.0))]
    assert real.ingest.sources[1].path == "../shared/data/mebeauty" and real.ingest.crop == "face"
    sets = profile_overrides("real", params=ROOT / "params.yaml", sets=["ingest.sources.1.path=/m e"])
    back = _hydra(next(s for s in sets if s.startswith("ingest.sources=")).split("=", 1)[1])
    assert [s["path"] for s in back] == ["../shared/data/facescore", "/m e"]


def _hydra(text: str):
    """Hydra's override value (bare mapping keys, as `dvc exp run -S` takes them) read back as YAML."""
    return yaml.safe_load(re.sub(r"([{,])(\w+):", r"\1\2: ", text))
