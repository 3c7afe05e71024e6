import json

import numpy as np
import pandas as pd
import pytest

from pipeline.stages.combine import combine, report


def _source(folder, names, value, size=8, quarantined=()):
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", np.full((len(names), size, size, 3), value, np.uint8))
    pd.DataFrame({"filename": names, "gender": ["f", "m"] * (len(names) // 2), "group": "asian",
                  "rating": 3.0, "sha256": "x", "orig_width": 10, "orig_height": 10}).to_parquet(folder / "meta.parquet")
    pd.DataFrame({"filename": list(quarantined), "line": 1, "reason": "no face", "detail": ""}).to_csv(
        folder / "quarantine.csv", index=False)
    return folder


def test_sources_stack_in_params_order_with_keys_that_cannot_collide(tmp_path):
    a = _source(tmp_path / "src" / "scut", ["x.jpg", "y.jpg"], 1, quarantined=["z.jpg"])
    b = _source(tmp_path / "src" / "mebeauty", ["female/asian/x.jpg", "x.jpg"], 2)
    _source(tmp_path / "src" / "stale", ["q.jpg", "r.jpg"], 9)            # no longer listed: ignored
    out = tmp_path / "out"
    out.mkdir()
    meta, quarantine = combine({"mebeauty": b, "scut": a}, out, chunk=1)
    images = np.load(out / "images.npy")
    assert meta["filename"].tolist() == ["mebeauty/female/asian/x.jpg", "mebeauty/x.jpg", "scut/x.jpg", "scut/y.jpg"]
    assert meta["filename"].is_unique and meta["source"].tolist() == ["mebeauty"] * 2 + ["scut"] * 2
    assert images[:, 0, 0, 0].tolist() == [2, 2, 1, 1]                    # row i of meta is images[i]
    assert quarantine[["source", "filename"]].values.tolist() == [["scut", "scut/z.jpg"]]
    rep = report(meta, quarantine, ["mebeauty", "scut"])
    assert (rep["rows_in"], rep["kept"], rep["quarantined"]) == (5, 4, 1)
    assert rep["sources"]["scut"]["rows_in"] == 3 and rep["sources"]["mebeauty"]["by_reason"] == {}
    json.dumps(rep)                                                        # DVC metrics: plain JSON


def test_sources_of_different_image_sizes_are_refused(tmp_path):
    a = _source(tmp_path / "a", ["x.jpg", "y.jpg"], 1, size=8)
    b = _source(tmp_path / "b", ["x.jpg", "y.jpg"], 1, size=16)
    with pytest.raises(ValueError, match="holds"):
        combine({"a": a, "b": b}, tmp_path)
    assert not (tmp_path / "images.npy").exists()                          # nothing half-written
