import numpy as np
import pandas as pd
import pytest

from pipeline.stages.validate import build_expectations, expectation_frame, failures, run_suite


def _meta(n=20):
    names = [f"{'f' if i % 2 else 'm'}t{'w' if i % 3 else 'y'}{i}.jpg" for i in range(n)]
    return pd.DataFrame({
        "filename": names, "gender": [n[0] for n in names],
        "group": ["caucasian" if n[2] == "w" else "asian" for n in names],
        "rating": np.linspace(1, 5, n), "sha256": ["0" * 64] * n,
        "orig_width": 350, "orig_height": 350})


def _check(meta, shape=None, bounds=(0.35, 0.65), docs=None):
    shape = shape or (len(meta), 32, 32, 3)
    return run_suite(expectation_frame(meta, shape), build_expectations(32, bounds, len(meta)), docs)


@pytest.fixture(scope="module")
def good_result(tmp_path_factory):
    return _check(_meta(), docs=tmp_path_factory.mktemp("gx") / "docs"), tmp_path_factory


def test_clean_table_passes_and_writes_data_docs(good_result):
    result, _ = good_result
    assert result["success"] and failures(result) == []
    assert result["statistics"]["evaluated_expectations"] == 16


def test_broken_table_names_each_failed_expectation_and_row_count():
    meta = _meta()
    meta.loc[0, "rating"] = 6.0
    meta.loc[1, "filename"] = meta.loc[3, "filename"]        # duplicate (and both are f/w names)
    meta.loc[5, "gender"] = "m"                              # ftw5 (an f name) labelled m
    meta.loc[4, "sha256"] = None
    got = {(f["expectation"], f["column"]): f["unexpected"] for f in failures(_check(meta))}
    assert got[("expect_column_values_to_be_between", "rating")] == 1
    assert got[("expect_column_values_to_be_unique", "filename")] == 2
    assert got[("expect_column_pair_values_to_be_equal", "gender=name_gender")] == 1
    assert got[("expect_column_values_to_not_be_null", "sha256")] == 1


def test_wrong_image_shape_row_count_and_class_imbalance_fail():
    meta = _meta()
    got = {(f["expectation"], f["column"]) for f in failures(_check(meta, shape=(19, 32, 30, 3)))}
    assert ("expect_column_values_to_be_between", "array_width") in got
    assert ("expect_column_values_to_be_between", "array_rows") in got
    only_men = meta[meta["gender"] == "m"]
    got = {f["column"] for f in failures(_check(only_men))}
    assert got == {"is_female"}


def _mebeauty(n=24):
    groups = ["asian", "black", "caucasian", "hispanic", "indian", "mideastern"]
    rows = [("female" if i % 2 else "male", groups[i % 6]) for i in range(n)]
    return pd.DataFrame({
        "source": "mebeauty", "filename": [f"mebeauty/{g}/{e}/p {i}.jpg" for i, (g, e) in enumerate(rows)],
        "gender": [g[0] for g, _ in rows], "group": [e for _, e in rows], "rating": np.linspace(1, 10, n),
        "sha256": ["0" * 64] * n, "orig_width": 900, "orig_height": 1200})


def test_each_source_is_checked_on_its_own_scale_groups_and_folders():
    from pipeline.core.sources import SourceConfig

    me = SourceConfig("mebeauty", "mebeauty", "x", None, (1.0, 10.0))
    scut = SourceConfig("scut", "scut", "y", None, (1.0, 5.0))
    meta = _mebeauty()

    def check(m, source):
        return failures(run_suite(expectation_frame(m, (len(m), 32, 32, 3), source.reader),
                                  build_expectations(32, (0.35, 0.65), len(m), source)))

    assert check(meta, me) == []                                  # 1-10 scores, six ethnicities, folders agree
    on_scut_scale = {f["column"] for f in check(meta, scut)}
    assert "rating" in on_scut_scale and "group" in on_scut_scale  # SCUT's 1-5 and two groups refuse them
    lying = meta.copy()
    lying.loc[0, "gender"] = "f" if lying.loc[0, "gender"] == "m" else "m"   # the label against its folder
    assert {f["column"] for f in check(lying, me)} == {"gender=name_gender"}
