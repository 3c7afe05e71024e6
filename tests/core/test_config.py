from pathlib import Path

import pytest
import yaml

from pipeline.cli.profile import flat_overrides
from pipeline.core.config import ParamsError, as_flat_dict, load_params, merge

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
    (lambda r: r["ingest"]["sources"][0].update(reader="webcam"), "params.ingest.sources[0].reader: 'webcam' is not one of"),
    (lambda r: r["ingest"]["sources"][0].update(scale=[5, 1]), "scale: expected [low, high]"),
    (lambda r: r["ingest"].update(sources=[]), "at least one source"),
    (lambda r: r["ingest"].update(sources=r["ingest"]["sources"] * 2), "unique names"),
    (lambda r: r["ingest"]["sources"][0].update(name="../x"), "letters, digits"),
    (lambda r: r["validate"].update(female_fraction=[0.5]), "expected a list of 2"),
    (lambda r: r["train"]["rating"].update(val_every=2), "train.rating.val_every: 1, or more with select: last"),
    (lambda r: r["train"]["gender"].update(val_every=0), "train.gender.val_every"),
    (lambda r: r["train"]["gender"].update(small_size=r["ingest"]["image_size"], small_epochs=2),
     "train.gender.small_size / small_epochs: a side from 8 to below"),
    (lambda r: r["train"]["gender"].update(small_size=4, small_epochs=2), "a side from 8"),
    (lambda r: r["train"]["rating"].update(small_size=32, small_epochs=-1), "train.rating.small_size"),
    (lambda r: r["refit"].update(fraction=0), "refit: fraction and lr_scale must be in"),
    (lambda r: r["refit"].update(lr_scale=2), "refit: fraction and lr_scale"),
    (lambda r: r["refit"].update(start="best"), "params.refit.start: 'best' is not one of"),
])
def test_bad_params_are_rejected_with_the_key_named(tmp_path, mutate, message):
    with pytest.raises(ParamsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_params(_write(tmp_path, mutate))


def test_progressive_resizing_within_its_bounds_loads_even_past_the_epochs(tmp_path):
    p = load_params(_write(tmp_path, lambda r: r["train"]["rating"].update(small_size=32, small_epochs=3)))
    assert (p.train.rating.small_size, p.train.rating.small_epochs) == (32, 3)
    short = load_params(_write(tmp_path, lambda r: r["train"]["rating"].update(small_size=32, small_epochs=20, epochs=1)))
    assert short.train.rating.epochs == 1       # a one-epoch smoke run of a profile: fit keeps that epoch full size


def test_int_is_accepted_for_float_and_flattening_names_every_leaf(tmp_path):
    p = load_params(_write(tmp_path, lambda r: r["split"].update(val=0)))
    assert p.split.val == 0.0 and isinstance(p.split.val, float)
    flat = as_flat_dict(p)
    assert flat["ingest.image_size"] == p.ingest.image_size and "tracking.uri" in flat


def test_merge_replaces_leaves_and_keeps_the_rest():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    assert merge(base, {"a": {"c": [5]}}) == {"a": {"b": 1, "c": [5]}, "d": 3}
    assert flat_overrides({"a": {"c": [5], "s": "x y"}, "n": None}) == ['a.c=[5]', 'a.s="x y"', "n=null"]
