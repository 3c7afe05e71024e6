import pandas as pd
import pytest

from pipeline.stages.split import SplitLeak, check_disjoint, official, read_official, strata, stratified


def _meta(n=400):
    rows = [(f"{g}t{grp}{i}.jpg", g, "caucasian" if grp == "w" else "asian")
            for i in range(n) for g, grp in [(("f", "m")[i % 2], ("w", "y", "y")[i % 3])]]
    return pd.DataFrame(rows, columns=["filename", "gender", "group"])


def test_stratified_parts_are_disjoint_complete_and_keep_cell_proportions():
    meta = _meta()
    parts = stratified(meta, val=0.15, test=0.15, seed=0)
    all_names = sum(parts.values(), [])
    assert len(all_names) == len(set(all_names)) == len(meta)
    assert all(abs(len(parts[p]) - n) <= 1 for p, n in [("train", 280), ("val", 60), ("test", 60)])
    whole = strata(meta).value_counts(normalize=True)
    for names in parts.values():
        cells = strata(meta[meta["filename"].isin(names)]).value_counts(normalize=True)
        assert (cells - whole).abs().max() < 0.03


def test_seed_changes_the_split_and_fixes_it():
    meta = _meta()
    assert stratified(meta, 0.15, 0.15, 1) == stratified(meta, 0.15, 0.15, 1)
    assert stratified(meta, 0.15, 0.15, 1)["test"] != stratified(meta, 0.15, 0.15, 2)["test"]


def test_official_split_keeps_membership_and_carves_val_from_train(tmp_path):
    meta = _meta(100)
    names = list(meta["filename"])
    (tmp_path / "train.txt").write_text("".join(f"{n} 3.1\n" for n in names[:60]))
    (tmp_path / "test.txt").write_text("".join(f"{n} 2.0\n" for n in names[60:]) + "ftw999.jpg 2.0\n")
    lists = read_official(tmp_path)
    parts = official(meta, lists, val=0.2, seed=0)
    assert set(parts["test"]) == set(names[60:])            # unknown ftw999 (not ingested) left out
    assert set(parts["train"]) | set(parts["val"]) == set(names[:60]) and len(parts["val"]) == 12


def test_a_name_in_two_parts_is_refused():
    with pytest.raises(SplitLeak, match="ftw1.jpg is in both train and test"):
        check_disjoint({"train": ["ftw1.jpg"], "val": [], "test": ["ftw1.jpg"]})


def test_two_sources_are_stratified_by_source_gender_and_ethnicity():
    """Each source keeps its share in every part: a part without MEBeauty's Indian men could not show them."""
    scut = _meta(300).assign(source="scut")
    me = pd.DataFrame({"filename": [f"me/{i}.jpg" for i in range(240)], "gender": ["f", "m"] * 120,
                       "group": ["indian", "black", "asian", "hispanic"] * 60, "source": "mebeauty"})
    meta = pd.concat([scut.assign(filename="scut/" + scut["filename"]), me], ignore_index=True)
    assert strata(meta).nunique() == 4 + 4
    parts = stratified(meta, val=0.15, test=0.15, seed=0)
    whole = strata(meta).value_counts(normalize=True)
    for names in parts.values():
        cells = strata(meta[meta["filename"].isin(names)]).value_counts(normalize=True)
        assert set(cells.index) == set(whole.index) and (cells - whole).abs().max() < 0.02
