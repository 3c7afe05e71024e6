import dataclasses

import pytest

from pipeline.core.config import load_params
from pipeline.stages.refit import check_recipe, refit_config

from conftest import ROOT


def _cfg(**kw):
    return dataclasses.replace(load_params(ROOT / "params.yaml").train.rating, **kw)


@pytest.mark.parametrize("budget, epochs, want", [("steps", 40, 28), ("steps", 24, 17), ("epochs", 40, 40),
                                                  ("steps", 1, 1)])
def test_refit_keeps_the_split_runs_steps_or_epochs(budget, epochs, want):
    got = refit_config(_cfg(epochs=epochs, select="best", patience=3), 2307, 3297, budget)
    assert got.epochs == want
    # every epoch runs (no validation to stop on) and the last one is kept
    assert got.select == "last" and got.patience == want
    assert dataclasses.replace(got, epochs=epochs, select="best", patience=3) == _cfg(epochs=epochs, select="best",
                                                                                        patience=3)


def test_a_split_model_of_another_recipe_is_not_refit():
    from pipeline.core.model import ModelConfig

    mcfg = ModelConfig("convnet", (8, 16), 0.1, 32)
    bundle = {"model_config": dataclasses.asdict(mcfg), "heads": ["rating"]}
    check_recipe(bundle, mcfg, ["rating"])
    with pytest.raises(SystemExit, match="rerun the train stage"):
        check_recipe(bundle, dataclasses.replace(mcfg, widths=(8, 32)), ["rating"])
    with pytest.raises(SystemExit, match="rerun the train stage"):
        check_recipe(bundle, mcfg, ["rating", "gender"])


def test_estimate_summary_is_mean_and_sample_sd_over_seeds():
    from pipeline.cli.estimate import summarise

    runs = {s: {"gender": {"accuracy": a}, "rating": {"pearson": p, "mae": 0.25, "rmse": 0.3}}
            for s, a, p in ((0, 0.97, 0.87), (1, 0.99, 0.89), (2, 0.98, 0.88))}
    got = summarise(runs)
    assert got["gender_accuracy"]["mean"] == pytest.approx(0.98) and got["gender_accuracy"]["sd"] == pytest.approx(0.01)
    assert got["rating_pearson"] == pytest.approx({"mean": 0.88, "sd": 0.01, "min": 0.87, "max": 0.89, "n": 3})
    assert summarise({0: runs[0]})["rating_mae"]["sd"] == 0.0


def test_each_estimate_seed_changes_split_and_init_and_registers_nothing():
    from pipeline.cli.estimate import seed_sets
    from pipeline.cli.profile import profile_overrides

    sets = profile_overrides("scut", "/data", params=ROOT / "params.yaml", sets=seed_sets(4))
    for want in ("split.seed=4", "train.gender.seed=4", "train.rating.seed=4", "refit.enabled=false",
                 "evaluate.promote=false"):
        assert want in sets
