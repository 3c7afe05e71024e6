import math

import numpy as np
import pytest

from pipeline.core.metrics import compute_metrics
from pipeline.stages.evaluate import PAPER, report

Y = np.array([0, 0, 1, 1, 1, 0, 1, 0])
P = np.array([0.1, 0.6, 0.8, 0.4, 0.9, 0.2, 0.7, 0.3])
G = np.array(["asian", "asian", "asian", "asian", "caucasian", "caucasian", "caucasian", "caucasian"])


def test_gender_metrics_match_hand_computed_values():
    m = compute_metrics("gender", Y, P, G)
    # thresholded at 0.5: 6 of 8 right (photo 2 and 4 wrong); AUC: of the 16 (male, female) pairs,
    # only (0.4, 0.6) is ranked the wrong way round -> 15/16
    assert m["accuracy"] == 0.75 and m["roc_auc"] == 15 / 16
    assert m["confusion"] == [[3, 1], [1, 3]]
    assert m["accuracy_asian"] == 0.5 and m["accuracy_caucasian"] == 1.0


def test_rating_metrics_match_hand_computed_values():
    t = np.array([1.5, 2.0, 3.1, 4.2, 2.8, 3.3, 4.9, 1.2])
    p = np.array([1.7, 2.4, 2.9, 3.8, 3.0, 3.0, 4.1, 1.9])
    m = compute_metrics("rating", t, p, G)
    # |errors| .2 .4 .2 .4 .2 .3 .8 .7: sum 3.2, squares sum 1.66 over 8 photos
    assert math.isclose(m["mae"], 0.4) and math.isclose(m["rmse"], math.sqrt(1.66 / 8))
    # Pearson and Spearman (ties: the two 3.0 share rank 5.5) worked out by the textbook formulas
    assert math.isclose(m["pearson"], 0.9820994230504098, rel_tol=1e-12)
    assert math.isclose(m["spearman"], 0.9341484842923421, rel_tol=1e-12)
    assert math.isclose(m["pearson_asian"], 0.9853189936465326, rel_tol=1e-12)


def test_constant_prediction_has_no_correlation_rather_than_a_number():
    m = compute_metrics("rating", np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]))
    assert math.isnan(m["pearson"]) and math.isnan(m["spearman"])


def test_rating_report_sets_our_numbers_beside_the_paper():
    m = compute_metrics("rating", np.array([1.0, 2.0, 3.5]), np.array([1.2, 2.1, 3.0]), np.array(["asian"] * 3))
    md = report("rating", m, "source `x`")
    assert "| **ours (from scratch)** |" in md and "Protocol: source `x`" in md
    for name, pc, _, _ in PAPER:
        assert f"| {name} | {pc:.4f} |" in md


def test_subgroup_metrics_have_counts_and_rating_mae():
    t, p = np.array([1.0, 2.0, 3.0, 4.0, 2.0, 3.0]), np.array([1.5, 2.0, 3.0, 4.0, 2.5, 2.0])
    sub = np.array(["asian_f", "asian_f", "asian_m", "caucasian_f", "caucasian_m", "caucasian_m"])
    m = compute_metrics("rating", t, p, [np.array([s.split("_")[0] for s in sub]), sub])
    assert m["n_asian"] == 3 and m["n_asian_f"] == 2 and m["n_caucasian_m"] == 2
    assert math.isclose(m["mae_asian_f"], 0.25) and math.isclose(m["mae_caucasian_m"], 0.75)
    assert math.isnan(m["pearson_asian_m"])                    # one photo: no correlation
    assert "| caucasian_m | 2 |" in report("rating", m, "p")


def test_bootstrap_interval_is_a_point_for_a_perfect_model_and_brackets_the_estimate():
    from pipeline.core.metrics import bootstrap_ci

    y = np.array([0, 1] * 50)
    assert bootstrap_ci("gender", y, y.astype(float)) == {"accuracy": [1.0, 1.0]}
    half = np.where(np.arange(100) < 50, y, 1 - y).astype(float)                    # exactly 50 % right
    lo, hi = bootstrap_ci("gender", y, half)["accuracy"]
    assert lo < 0.5 < hi and 0.05 < hi - lo < 0.25          # binomial sd at n=100: 0.05 -> ~0.2 wide
    rng = np.random.default_rng(1)
    t = rng.uniform(1, 5, 400)
    p = t + rng.normal(0, 0.5, 400)
    ci = bootstrap_ci("rating", t, p, n=500)
    m = compute_metrics("rating", t, p)
    for k in ("pearson", "mae", "rmse"):
        assert ci[k][0] < m[k] < ci[k][1], k
    assert ci["mae"][1] - ci["mae"][0] < 0.1 and ci == bootstrap_ci("rating", t, p, n=500)   # seeded


def test_metrics_split_into_headline_and_groups_with_nothing_lost():
    from pipeline.core.metrics import split_metrics

    m = compute_metrics("rating", np.array([1.5, 2.0, 3.1, 4.2, 2.8, 3.3, 4.9, 1.2]),
                        np.array([1.7, 2.4, 2.9, 3.8, 3.0, 3.0, 4.1, 1.9]), G)
    headline, groups = split_metrics(m)
    assert set(headline) == {"mae", "rmse", "pearson", "spearman"}
    assert {"pearson_asian", "mae_caucasian", "n_asian"} <= set(groups) and {**headline, **groups} == m


def test_populations_score_rating_on_each_sources_own_scale():
    """A model that is exact on the served scale is exact on MEBeauty's 1-10 scale too: the bundle's map
    takes the predictions back; Pearson per source is the same on either scale."""
    import pandas as pd

    from pipeline.core.data import Part, on_served_scale
    from pipeline.stages.evaluate import populations

    maps = {"scut": (1.0, 0.0), "mebeauty": (0.5, 0.0)}
    meta = pd.DataFrame({"source": ["scut"] * 40 + ["mebeauty"] * 40, "gender": ["f", "m"] * 40,
                         "group": ["asian"] * 60 + ["black"] * 20,
                         "rating": np.r_[np.linspace(1, 5, 40), np.linspace(2, 10, 40)]})
    test = on_served_scale({"test": Part(np.zeros((80, 4, 4, 3), np.uint8), meta)}, maps)["test"]
    served_truth = test.meta["rating"].to_numpy()
    rows, gaps = populations("rating", test, served_truth, maps)
    by = {(r["grouping"], r["group"]): r for r in rows}
    assert by[("source", "mebeauty")]["mae"] == pytest.approx(0) and by[("source", "mebeauty")]["pearson"] == pytest.approx(1)
    assert by[("source/ethnicity", "mebeauty/black")]["n"] == 20 and by[("source/ethnicity", "mebeauty/black")]["small"]
    noisy = served_truth + np.r_[np.zeros(40), np.full(40, 0.5)]          # 0.5 off on the served scale ...
    rows, _ = populations("rating", test, noisy, maps)
    assert {(r["grouping"], r["group"]): r for r in rows}[("source", "mebeauty")]["mae"] == pytest.approx(1.0)  # ... 1 on 1-10
