import io
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.core.preprocess import load_uint8
from pipeline.core.sources import read_labels
from pipeline.stages.ingest import ingest, plan


def _jpeg(mode="RGB", size=(50, 40)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert(mode).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def messy(tmp_path):
    """A course-layout folder with one good photo per mode and one row per kind of bad input."""
    img = tmp_path / "images"
    img.mkdir()
    (tmp_path / "outside.jpg").write_bytes(_jpeg())
    good = {"ftw1.jpg": _jpeg(), "mty2.jpg": _jpeg("L"), "fty3.jpg": _jpeg("CMYK"), "mtw4.jpg": _jpeg()}
    for n, data in good.items():
        (img / n).write_bytes(data)
    bomb = io.BytesIO()
    Image.new("L", (2000, 2000)).save(bomb, "PNG")
    (img / "ftw10.jpg").write_bytes(b"")                              # zero bytes
    (img / "ftw11.jpg").write_bytes(b"GIF89a but not really")          # undecodable
    (img / "ftw12.jpg").write_bytes(_jpeg(size=(200, 200))[:600])      # truncated
    (img / "ftw13.jpg").write_bytes(bomb.getvalue())                  # decompression bomb
    (img / "xyz14.jpg").write_bytes(_jpeg())                          # unknown name prefix
    (img / "mtw15.jpg").write_bytes(_jpeg())                          # no label row at all
    (img / "mtw16.jpg").write_bytes(_jpeg())
    (img / "mtw17.jpg").write_bytes(_jpeg())
    labels = ["Filename,Rating", "ftw1.jpg,2.5", "mty2.jpg,1", "fty3.jpg,5", "mtw4.jpg,3.25",
              "ftw10.jpg,3", "ftw11.jpg,3", "ftw12.jpg,3", "ftw13.jpg,3", "xyz14.jpg,3",
              "mtw16.jpg,nan", "mtw17.jpg,5.5", "ftw1.jpg,4.0", "mtw99.jpg,2", "../outside.jpg,3"]
    (tmp_path / "FaceScore.csv").write_text("\n".join(labels) + "\n")
    return tmp_path


EXPECTED_REASONS = {
    "ftw10.jpg": "empty file", "ftw11.jpg": "unsupported format GIF (send JPEG, PNG, WebP, HEIC/HEIF or AVIF)", "ftw12.jpg": "truncated image",
    "ftw13.jpg": "decompression bomb", "xyz14.jpg": "unknown name prefix",
    "mtw15.jpg": "image without a label", "mtw16.jpg": "rating is not a number",
    "mtw17.jpg": "rating out of range (1.0, 5.0)", "mtw99.jpg": "missing file",
    "../outside.jpg": "path leaves the data folder",
}


def test_every_bad_input_is_quarantined_with_its_reason_and_counts_reconcile(messy):
    rows = read_labels(messy / "FaceScore.csv", "facescore")
    res = ingest(rows, messy / "images", size=24, max_pixels=1_000_000)
    q = res.quarantine
    got = dict(zip(q["filename"], q["reason"], strict=True))
    dup = q[(q["filename"] == "ftw1.jpg")]
    assert dup["reason"].tolist() == ["duplicate filename (line 2 kept)"]
    for name, reason in EXPECTED_REASONS.items():
        assert got[name] == reason, name
    assert sorted(res.meta["filename"]) == ["ftw1.jpg", "fty3.jpg", "mtw4.jpg", "mty2.jpg"]
    assert res.counts() == {"rows_in": 15, "kept": 4, "quarantined": 11}
    assert res.rows_in == len(res.meta) + len(res.quarantine)
    assert res.meta.set_index("filename").loc["ftw1.jpg", "rating"] == 2.5    # first row wins


def test_array_rows_match_meta_rows_and_the_shared_preprocessing(messy):
    rows = read_labels(messy / "FaceScore.csv", "facescore")
    res = ingest(rows, messy / "images", size=24, max_pixels=1_000_000)
    assert res.images.shape == (4, 24, 24, 3) and res.images.dtype == np.uint8
    for i, name in enumerate(res.meta["filename"]):
        np.testing.assert_array_equal(res.images[i], load_uint8(messy / "images" / name, 24, 10**6))
    m = res.meta.set_index("filename")
    assert m.loc["mty2.jpg", ["gender", "group"]].tolist() == ["m", "asian"]
    assert m.loc["ftw1.jpg", ["orig_width", "orig_height"]].tolist() == [50, 40]
    assert len(m.loc["ftw1.jpg", "sha256"]) == 64


def test_parallel_memmap_output_equals_in_memory_output(tiny_faces, tmp_path):
    rows = read_labels(tiny_faces / "FaceScore.csv", "facescore")
    mem = ingest(rows, tiny_faces / "images", 32, 10**6)
    disk = ingest(rows, tiny_faces / "images", 32, 10**6, out_npy=tmp_path / "images.npy", workers=2)
    stored = np.load(tmp_path / "images.npy")
    np.testing.assert_array_equal(stored, mem.images)
    assert disk.meta.equals(mem.meta) and len(disk.quarantine) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npy"]     # scratch file removed


def test_plan_quarantines_without_decoding(tiny_faces, tmp_path):
    shutil.copytree(tiny_faces / "images", tmp_path / "images")
    rows = read_labels(tiny_faces / "FaceScore.csv", "facescore")
    (tmp_path / "images" / rows[0].filename).unlink()
    todo, bad, rows_in = plan(rows, tmp_path / "images")
    assert [b["reason"] for b in bad] == ["missing file"] and len(todo) == rows_in - 1 == 39


def test_quarantined_rows_shrink_the_stored_array(messy, tmp_path):
    rows = read_labels(messy / "FaceScore.csv", "facescore")
    res = ingest(rows, messy / "images", 24, 1_000_000, out_npy=tmp_path / "images.npy", workers=2)
    assert np.load(tmp_path / "images.npy").shape == (4, 24, 24, 3) == res.images.shape


def test_the_recorded_size_is_the_photos_own_even_when_it_is_draft_decoded(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ftw1.jpg").write_bytes(_jpeg(size=(400, 320)))   # 320 >= 4 x 24 x 2: drafted
    (tmp_path / "FaceScore.csv").write_text("Filename,Rating\nftw1.jpg,3\n")
    res = ingest(read_labels(tmp_path / "FaceScore.csv", "facescore"), tmp_path / "images", 24, 10**6)
    assert (res.meta["orig_width"][0], res.meta["orig_height"][0]) == (400, 320)
    assert res.images.shape == (1, 24, 24, 3)


def test_face_crop_quarantines_photos_without_a_face_and_stores_the_face_steps_crops(tiny_faces, tmp_path):
    """ingest.crop=face: a photo where no face is found is a 'no face' row, not a silent centre crop;
    every kept row is exactly the face step's crop (in 2 worker processes, as the stage runs)."""
    from drawn import CFG, _jpeg, _scene

    folder = tmp_path / "faces"
    shutil.copytree(tiny_faces, folder)
    names = sorted(p.name for p in (folder / "images").iterdir())
    for n in names[:3]:
        (folder / "images" / n).write_bytes(_jpeg(_scene(None, size=(200, 160), seed=len(n))))
    rows = read_labels(folder / "FaceScore.csv", "synthetic")
    res = ingest(rows, folder / "images", 32, 10**7, tmp_path / "images.npy", workers=2, face=CFG)
    q = res.quarantine.set_index("filename")
    assert set(q.index) >= set(names[:3]) and set(q.loc[names[:3], "reason"]) == {"no face"}
    assert res.counts()["rows_in"] == res.counts()["kept"] + res.counts()["quarantined"] == len(rows)
    for i, name in enumerate(res.meta["filename"][:5]):
        np.testing.assert_array_equal(res.images[i], load_uint8(folder / "images" / name, 32, 10**7, CFG))


@pytest.fixture
def mebeauty(tmp_path):
    """MEBeauty's layout: images/<gender>/<ethnicity>/<file>, labels.csv with both as columns."""
    root = tmp_path / "me"
    for g, e, n in (("female", "asian", "a.jpg"), ("male", "black", "b.jpg"), ("male", "indian", "orphan.jpg")):
        (root / "images" / g / e).mkdir(parents=True, exist_ok=True)
        (root / "images" / g / e / n).write_bytes(_jpeg())
    (tmp_path / "secret.jpg").write_bytes(_jpeg())
    (root / "images" / "female" / "asian" / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "labels.csv").write_text(
        "path,score,gender,ethnicity,split\n"
        "images/female/asian/a.jpg,6.5,female,asian,train\n"
        "images/male/black/b.jpg,8.0,male,black,val\n"
        "images/female/asian/a.jpg,6.5,female,asian,val\n"          # listed in both parts (as upstream)
        "images/female/asian/link.jpg,5,female,asian,train\n")       # a link that leads out of the folder
    return root


def test_mebeauty_rows_keep_their_labels_folders_and_quarantine_what_leaves(mebeauty):
    rows = read_labels(mebeauty / "labels.csv", "mebeauty", (1.0, 10.0))
    res = ingest(rows, mebeauty / "images", size=24, max_pixels=10**6)
    assert res.meta[["filename", "gender", "group", "rating"]].values.tolist() == [
        ["female/asian/a.jpg", "f", "asian", 6.5], ["male/black/b.jpg", "m", "black", 8.0]]
    got = dict(zip(res.quarantine["filename"], res.quarantine["reason"], strict=True))
    assert got == {"female/asian/a.jpg": "duplicate filename (line 2 kept)",
                   "female/asian/link.jpg": "path leaves the data folder",
                   "male/indian/orphan.jpg": "image without a label"}
    assert res.counts() == {"rows_in": 5, "kept": 2, "quarantined": 3}
