import numpy as np
import pytest

from pipeline.core.metrics import SMALL_GROUP, largest_gaps, population_metrics, population_rows, populations_markdown


def _gender(n_a=200, n_b=100, n_c=10, err_a=0.02, err_b=0.2, seed=0):
    """Three groups with known error rates (c: too small to compare)."""
    rng = np.random.default_rng(seed)
    labels = np.array(["a"] * n_a + ["b"] * n_b + ["c"] * n_c)
    truth = rng.integers(0, 2, len(labels))
    wrong = rng.random(len(labels)) < np.where(labels == "a", err_a, err_b)
    pred = np.where(wrong, 1 - truth, truth).astype(float)
    return truth, pred, labels


def test_every_group_gets_its_accuracy_interval_and_small_groups_are_flagged_not_hidden():
    truth, pred, labels = _gender()
    rows = population_rows("gender", truth, pred, {"ethnicity": labels}, n_boot=300)
    by = {r["group"]: r for r in rows}
    assert set(by) == {"a", "b", "c"} and by["c"]["n"] == 10 < SMALL_GROUP and by["c"]["small"]
    for r in rows:
        lo, hi = r["ci95"]["accuracy"]
        assert lo <= r["accuracy"] <= hi
        assert r["accuracy"] == pytest.approx(((pred >= 0.5) == truth)[labels == r["group"]].mean())
    # fewer photos, wider interval
    width = {g: np.diff(by[g]["ci95"]["accuracy"])[0] for g in "ab"}
    assert width["b"] > width["a"]


def test_the_largest_gap_compares_groups_big_enough_to_compare():
    truth, pred, labels = _gender()
    rows = population_rows("gender", truth, pred, {"ethnicity": labels}, n_boot=200)
    gap = largest_gaps("gender", rows)["ethnicity"]
    by = {r["group"]: r["accuracy"] for r in rows}
    assert (gap["best"], gap["worst"]) == ("a", "b") and gap["gap"] == pytest.approx(by["a"] - by["b"])
    only_one = population_rows("gender", truth[:200], pred[:200], {"ethnicity": labels[:200]}, n_boot=50)
    assert largest_gaps("gender", only_one) == {}            # one comparable group: no gap to report


def test_rating_rows_carry_pearson_and_mae_and_flat_names_for_mlflow():
    rng = np.random.default_rng(0)
    t = rng.normal(6, 1, 120)
    p = t + rng.normal(0, 0.5, 120)
    labels = np.array(["me/asian/f"] * 60 + ["me/black/m"] * 60)
    rows = population_rows("rating", t, p, {"source/ethnicity/gender": labels}, n_boot=100)
    assert {"pearson", "mae", "ci95"} <= set(rows[0]) and set(rows[0]["ci95"]) == {"pearson", "mae", "rmse"}
    flat = population_metrics("rating", rows)
    assert flat["pop/source/ethnicity/gender/me/asian/f/n"] == 60.0
    assert flat["pop/source/ethnicity/gender/me/black/m/pearson_lo"] < flat["pop/source/ethnicity/gender/me/black/m/pearson"]
    text = populations_markdown("rating", rows, largest_gaps("rating", rows))
    assert "| source/ethnicity/gender | me/asian/f | 60 |" in text and "Largest gap" in text
