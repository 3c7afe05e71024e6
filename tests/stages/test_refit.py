import dataclasses

import pytest

from pipeline.core.config import load_params
from pipeline.stages.refit import recipe, refit_config, starting_net

from conftest import ROOT


def _cfg(**kw):
    return dataclasses.replace(load_params(ROOT / "params.yaml").train.rating, **kw)


@pytest.mark.parametrize("budget, epochs, want", [("steps", 40, 28), ("steps", 24, 17), ("epochs", 40, 40),
                                                  ("steps", 1, 1)])
def test_refit_keeps_the_split_runs_steps_or_epochs(budget, epochs, want):
    rc = dataclasses.replace(load_params(ROOT / "params.yaml").refit, budget=budget, fraction=1.0, lr_scale=1.0)
    got = refit_config(_cfg(epochs=epochs, select="best", patience=3), 2307, 3297, rc)
    assert got.epochs == want
    # every epoch runs (no validation to stop on) and the last one is kept
    assert got.select == "last" and got.patience == want
    assert dataclasses.replace(got, epochs=epochs, select="best", patience=3) == _cfg(epochs=epochs, select="best",
                                                                                        patience=3)


@pytest.mark.parametrize("budget, fraction, want", [("steps", 0.25, 7), ("epochs", 0.25, 10), ("steps", 0.01, 1)])
def test_a_refit_from_the_split_model_is_a_fraction_of_the_budget_at_a_lower_peak(budget, fraction, want):
    rc = dataclasses.replace(load_params(ROOT / "params.yaml").refit, budget=budget, start="split",
                             fraction=fraction, lr_scale=0.2)
    got = refit_config(_cfg(epochs=40, lr=0.003), 2307, 3297, rc)
    assert got.epochs == want and got.patience == want and got.select == "last"
    assert got.lr == pytest.approx(0.0006)


@pytest.mark.parametrize("start, small", [("scratch", 10), ("split", 0)])
def test_a_refit_shrinks_the_same_share_of_its_epochs_from_scratch_and_none_from_the_split_model(start, small):
    rc = dataclasses.replace(load_params(ROOT / "params.yaml").refit, budget="epochs", start=start, fraction=0.5,
                             lr_scale=1.0)
    got = refit_config(_cfg(epochs=40, small_size=64, small_epochs=20), 2307, 3297, rc)
    assert got.epochs == 20 and got.small_epochs == small and got.small_size == (64 if small else 0)
    one = refit_config(_cfg(epochs=40, small_size=64, small_epochs=39), 2307, 3297,
                       dataclasses.replace(rc, fraction=0.05))
    assert one.epochs == 2 and one.small_epochs == (1 if start == "scratch" else 0)   # the last at full size


def test_the_refit_trains_the_network_and_heads_of_the_split_model_not_params():
    from pipeline.core.model import ModelConfig

    mcfg = ModelConfig("convnet", (8, 16), 0.1, 32)
    bundle = {"model_config": {**dataclasses.asdict(mcfg), "widths": [8, 16]}, "heads": ("rating", "gender")}
    assert recipe(bundle) == (mcfg, ["rating", "gender"])          # widths as saved (a list) -> the config's tuple



def test_each_estimate_seed_changes_split_and_init_and_registers_nothing():
    from pipeline.cli.estimate import seed_sets
    from pipeline.cli.profile import profile_overrides

    sets = profile_overrides("scut", "/data", params=ROOT / "params.yaml", sets=seed_sets(4))
    for want in ("split.seed=4", "train.gender.seed=4", "train.rating.seed=4", "refit.enabled=false",
                 "evaluate.promote=false"):
        assert want in sets


def test_a_refit_starts_from_the_seeds_weights_or_from_the_split_models(tmp_path):
    import torch

    from pipeline.core.fit import init_model
    from pipeline.core.model import ModelConfig, make_bundle

    mcfg, heads = ModelConfig("convnet", (4, 8), 0.0, 16), ["rating"]
    trained = init_model(mcfg, heads, 7)
    path = tmp_path / "model.pt"
    torch.save(make_bundle(trained, mcfg, heads, "rating", {}, {}, {}), path)
    fresh, origin = starting_net(mcfg, heads, 0, "scratch", path)

    def same(a, b) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert origin == "" and same(fresh.state_dict(), init_model(mcfg, heads, 0).state_dict())
    warm, origin = starting_net(mcfg, heads, 0, "split", path)
    assert origin.startswith("split:") and same(warm.state_dict(), trained.state_dict())
    assert not same(warm.state_dict(), fresh.state_dict())
