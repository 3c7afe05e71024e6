"""On the real SCUT-FBP5500 photos in ../shared (skipped where they are absent)."""
import pytest

from pipeline.ingest import ingest
from pipeline.sources import locate, read_labels


@pytest.mark.realdata
@pytest.mark.slow
def test_all_3300_real_photos_ingest_without_quarantine(real_data, tmp_path):
    labels, images = locate("facescore", real_data, None)
    res = ingest(read_labels(labels, "facescore"), images, 64, 40_000_000, tmp_path / "i.npy", workers=2)
    assert res.counts() == {"rows_in": 3300, "kept": 3300, "quarantined": 0}
    m = res.meta
    assert (m["gender"] == "f").sum() == 1673 and (m["gender"] == "m").sum() == 1627
    cells = (m["filename"].str[:3]).value_counts().to_dict()
    assert cells == {"ftw": 465, "fty": 1208, "mtw": 438, "mty": 1189}
    assert m["rating"].between(1, 5).all()
    assert set(m["orig_width"]) == {350} and res.images.shape == (3300, 64, 64, 3)


@pytest.mark.realdata
def test_official_labels_read_as_scut_source(real_data):
    rows = read_labels(real_data / "SCUT-FBP5500_labels.txt", "scut")
    assert len(rows) == 3300 and all(r.problem is None for r in rows)
