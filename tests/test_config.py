from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, as_flat_dict, flat_overrides, load_params, merge, profile_overrides

from conftest import ROOT


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(raw)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_repo_params_load_into_frozen_dataclasses():
    p = load_params(ROOT / "params.yaml")
    assert p.ingest.image_size > 0 and p.split.method in ("stratified", "official")
    assert isinstance(p.validate.female_fraction, tuple)
    with pytest.raises(AttributeError):
        p.ingest.image_size = 1  # frozen


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["ingest"].update(imagesize=64), "unknown keys ['imagesize']"),
    (lambda r: r["split"].pop("seed"), "missing keys ['seed']"),
    (lambda r: r.update(extra_section={}), "unknown keys ['extra_section']"),
    (lambda r: r["ingest"].update(image_size="big"), "params.ingest.image_size: expected int"),
    (lambda r: r["ingest"].update(image_size=True), "expected int"),
    (lambda r: r["ingest"].update(source="webcam"), "is not one of"),
    (lambda r: r["validate"].update(female_fraction=[0.5]), "expected a list of 2"),
])
def test_bad_params_are_rejected_with_the_key_named(tmp_path, mutate, message):
    with pytest.raises(ParamsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_params(_write(tmp_path, mutate))


def test_int_is_accepted_for_float_and_flattening_names_every_leaf(tmp_path):
    p = load_params(_write(tmp_path, lambda r: r["split"].update(val=0)))
    assert p.split.val == 0.0 and isinstance(p.split.val, float)
    flat = as_flat_dict(p)
    assert flat["ingest.image_size"] == p.ingest.image_size and "tracking.uri" in flat


def test_the_scut_profile_merges_into_valid_params_and_data_replaces_the_path():
    sets = profile_overrides("scut", "/data/my copy", params=ROOT / "params.yaml")
    assert 'ingest.source="scut"' in sets and 'ingest.path="/data/my copy"' in sets
    assert "train.gender.widths=[24,48,96,192]" in sets and "ingest.label_file=null" in sets
    # every override reads back (as DVC reads -S values: YAML) to the profile's value
    raw = yaml.safe_load((ROOT / "profiles" / "scut.yaml").read_text())
    back = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in sets)}
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


def test_merge_replaces_leaves_and_keeps_the_rest():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    assert merge(base, {"a": {"c": [5]}}) == {"a": {"b": 1, "c": [5]}, "d": 3}
    assert flat_overrides({"a": {"c": [5], "s": "x y"}, "n": None}) == ['a.c=[5]', 'a.s="x y"', "n=null"]


def test_the_profile_command_prints_dvc_exp_run_and_refuses_data_without_a_profile():
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pipeline.config", "--dry-run"]
    ok = subprocess.run(cmd + ["--profile", "scut", "--data", "/photos"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("dvc exp run -S ingest.source=\"scut\"")
    assert '-S ingest.path="/photos"' in ok.stdout
    bad = subprocess.run(cmd + ["--data", "/photos"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "needs a profile" in bad.stderr


def test_sets_on_top_of_a_profile_win_and_are_checked_like_the_profile():
    sets = profile_overrides("scut-gpu", "/photos", params=ROOT / "params.yaml",
                             sets=["train.rating.epochs=1", "ingest.image_size=32", "train.gender.widths=[4,8]"])
    back = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in sets)}
    assert back["train.rating.epochs"] == 1 and back["ingest.image_size"] == 32
    assert back["train.gender.widths"] == [4, 8] and back["train.gender.epochs"] == 60     # the rest: the profile's
    with pytest.raises(ParamsError, match="unknown key 'epochz'"):
        profile_overrides("scut-gpu", params=ROOT / "params.yaml", sets=["train.rating.epochz=1"])
    with pytest.raises(ParamsError, match="expected key.path=value"):
        profile_overrides("scut-gpu", params=ROOT / "params.yaml", sets=["train.rating.epochs"])


def test_the_gpu_profile_differs_from_the_cpu_profile_only_in_budget_not_in_data():
    from pipeline.config import load_profile

    cpu = load_profile("scut", params=ROOT / "params.yaml")
    gpu = load_profile("scut-gpu", params=ROOT / "params.yaml")
    assert (gpu.ingest.source, gpu.ingest.crop, gpu.split) == (cpu.ingest.source, cpu.ingest.crop, cpu.split)
    assert gpu.ingest.image_size > cpu.ingest.image_size and gpu.train.rating.epochs > cpu.train.rating.epochs
