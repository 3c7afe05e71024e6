import dataclasses

import pytest

from pipeline.config import load_params
from pipeline.refit import check_recipe, refit_config

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
    from pipeline.model import ModelConfig

    mcfg = ModelConfig("convnet", (8, 16), 0.1, 32)
    bundle = {"model_config": dataclasses.asdict(mcfg), "heads": ["rating"]}
    check_recipe(bundle, mcfg, ["rating"])
    with pytest.raises(SystemExit, match="rerun the train stage"):
        check_recipe(bundle, dataclasses.replace(mcfg, widths=(8, 32)), ["rating"])
    with pytest.raises(SystemExit, match="rerun the train stage"):
        check_recipe(bundle, mcfg, ["rating", "gender"])
