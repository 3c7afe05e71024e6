import numpy as np
import pandas as pd
import pytest

from pipeline.core.scales import fit_maps, to_own, to_served
from pipeline.core.sources import SourceConfig

SCUT = SourceConfig("scut", "scut", "x", None, (1.0, 5.0))
ME = SourceConfig("mebeauty", "mebeauty", "y", None, (1.0, 10.0))


def _train(seed=0):
    rng = np.random.default_rng(seed)
    scut, me = rng.normal(3.0, 0.6, 400).clip(1, 5), rng.normal(6.2, 1.1, 300).clip(1, 10)
    return pd.DataFrame({"source": ["scut"] * 400 + ["mebeauty"] * 300, "rating": np.r_[scut, me]})


def test_the_reference_is_untouched_and_the_other_scale_gets_its_mean_and_spread():
    train = _train()
    maps = fit_maps(train, [SCUT, ME])
    assert maps["scut"] == (1.0, 0.0)
    served = to_served(train, maps)
    ref, other = served[served.source == "scut"].rating, served[served.source == "mebeauty"].rating
    assert other.mean() == pytest.approx(ref.mean()) and other.std(ddof=0) == pytest.approx(ref.std(ddof=0))
    assert (served["rating_own"] == train["rating"]).all()           # the label as written is kept


def test_the_map_is_affine_so_pearson_per_source_is_unchanged_and_to_own_inverts_it():
    train = _train()
    maps = fit_maps(train, [SCUT, ME])
    served = to_served(train, maps)
    me = served[served.source == "mebeauty"]
    pred = me.rating + np.random.default_rng(1).normal(0, 0.3, len(me))          # a served-scale prediction
    own = to_own(pred, me.source, maps)
    assert np.corrcoef(own, me.rating_own)[0, 1] == pytest.approx(np.corrcoef(pred, me.rating)[0, 1])
    assert to_own(me.rating.to_numpy(), me.source, maps) == pytest.approx(me.rating_own.to_numpy())


def test_only_the_training_part_fits_the_map():
    """Rows of another part (val, test) never move the map: a leak would flatter the test metrics."""
    train = _train()
    test = pd.DataFrame({"source": ["mebeauty"] * 50, "rating": np.full(50, 9.5)})
    assert fit_maps(train, [SCUT, ME]) != fit_maps(pd.concat([train, test]), [SCUT, ME])
    assert fit_maps(train, [SCUT, ME]) == fit_maps(train.copy(), [SCUT, ME])


def test_without_a_reference_each_scale_maps_end_to_end():
    maps = fit_maps(_train(), [ME])
    a, b = maps["mebeauty"]
    assert (a * 1 + b, a * 10 + b) == pytest.approx((1.0, 5.0))


def test_a_source_the_model_never_saw_is_an_error_not_a_silent_identity():
    with pytest.raises(KeyError, match="no rating map for source"):
        to_served(pd.DataFrame({"source": ["other"], "rating": [3.0]}), {"scut": (1.0, 0.0)})
