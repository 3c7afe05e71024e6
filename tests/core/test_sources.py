import math

import pytest

from pipeline.core.sources import escapes, locate, name_says, parse_name, read_labels


@pytest.mark.parametrize("name, expected", [
    ("ftw101.jpg", ("f", "caucasian")), ("fty7.jpg", ("f", "asian")),
    ("mtw3.jpg", ("m", "caucasian")), ("mty1189.JPG", ("m", "asian")),
    ("AF12.jpg", ("f", "asian")), ("CM700.jpg", ("m", "caucasian")), ("CF1.png", ("f", "caucasian")),
    ("xtw1.jpg", None), ("fxw1.jpg", None), ("ftz1.jpg", None), ("BF1.jpg", None), ("ftw.jpg", None),
    ("ftw1.gif", None), ("", None),
])
def test_parse_name(name, expected):
    assert parse_name(name) == expected


def test_course_csv_rows_keep_their_problems(tmp_path):
    p = tmp_path / "FaceScore.csv"
    p.write_text("Filename,Rating\nftw1.jpg,2.5\nftw2.jpg,nan\nftw3.jpg,abc\nftw4.jpg,7\nftw5.jpg\n"
                 "ftw6.jpg,1,extra\n\nftw7.jpg, 5.0\n")
    rows = read_labels(p, "facescore")
    got = {r.filename: r.problem for r in rows}
    assert got["ftw1.jpg"] is None and got["ftw7.jpg"] is None
    assert got["ftw2.jpg"] == got["ftw3.jpg"] == "rating is not a number"
    assert got["ftw4.jpg"].startswith("rating out of range")
    assert got["ftw5.jpg"].startswith("malformed") and got["ftw6.jpg"].startswith("malformed")
    assert [r.line for r in rows] == [2, 3, 4, 5, 6, 7, 9]
    assert math.isnan(rows[1].rating)


def test_course_csv_needs_its_header(tmp_path):
    p = tmp_path / "FaceScore.csv"
    p.write_text("name,score\nftw1.jpg,2\n")
    with pytest.raises(ValueError, match="Filename,Rating"):
        read_labels(p, "facescore")


def test_scut_label_file(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("AF1.jpg 2.483333\nCM2.jpg 3.1\n\nftw3.jpg\n")
    rows = read_labels(p, "scut")
    assert [(r.filename, r.rating, r.problem) for r in rows[:2]] == [("AF1.jpg", 2.483333, None), ("CM2.jpg", 3.1, None)]
    assert rows[2].problem.startswith("malformed")


def test_locate_finds_the_image_folder_and_reports_what_is_missing(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "labels.txt").write_text("")
    assert locate("scut", tmp_path, "labels.txt") == (tmp_path / "labels.txt", tmp_path / "Images")
    with pytest.raises(FileNotFoundError, match="no label file"):
        locate("facescore", tmp_path, None)


def test_scut_prefers_official_labels_and_falls_back_to_the_course_csv(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "FaceScore.csv").write_text("Filename,Rating\nftw1.jpg,3.5\n")
    labels, _ = locate("scut", tmp_path, None)          # a course copy: only FaceScore.csv
    assert labels.name == "FaceScore.csv"
    assert [(r.filename, r.rating) for r in read_labels(labels, "scut")] == [("ftw1.jpg", 3.5)]
    (tmp_path / "train_test_files").mkdir()
    (tmp_path / "train_test_files" / "All_labels.txt").write_text("ftw1.jpg 2.0\n")
    assert locate("scut", tmp_path, None)[0] == tmp_path / "train_test_files" / "All_labels.txt"
    (tmp_path / "SCUT-FBP5500_labels.txt").write_text("ftw1.jpg 2.5\n")
    assert locate("scut", tmp_path, None)[0] == tmp_path / "SCUT-FBP5500_labels.txt"


@pytest.mark.parametrize("name, bad", [
    ("ftw1.jpg", False), ("../ftw1.jpg", True), ("/etc/passwd", True), ("a/../../ftw1.jpg", True),
    ("sub/ftw1.jpg", False), ("female/asian/x.jpg", False), ("..\\ftw1.jpg", True), ("", True),
    ("sub/../../x.jpg", True),
])
def test_escapes(name, bad):
    assert escapes(name) is bad


def test_mebeauty_labels_carry_gender_ethnicity_and_their_own_scale(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("path,score,gender,ethnicity,split\n"
                 "images/female/asian/a.jpg,6.2,female,asian,train\n"
                 "images/male/indian/b.jpg,9.9,male,indian,val\n"
                 "images/male/black/c.jpg,10.5,male,black,train\n"          # off the 1-10 scale
                 "images/female/martian/d.jpg,5,female,martian,train\n"     # unknown ethnicity
                 "images/x/asian/e.jpg,5,other,asian,train\n"               # unknown gender
                 "images/female/asian/f.jpg,5\n")                           # short line
    rows = read_labels(p, "mebeauty", (1.0, 10.0))
    got = {r.filename: r for r in rows}
    assert (got["female/asian/a.jpg"].gender, got["female/asian/a.jpg"].group) == ("f", "asian")
    assert got["male/indian/b.jpg"].rating == 9.9 and got["male/indian/b.jpg"].problem is None
    assert got["male/black/c.jpg"].problem.startswith("rating out of range (1.0, 10.0)")
    assert got["female/martian/d.jpg"].problem.startswith("unknown ethnicity")
    assert got["x/asian/e.jpg"].problem.startswith("unknown gender")
    assert rows[-1].problem.startswith("malformed")
    # the same score on SCUT's scale is out of range: each source is checked on its own scale
    assert read_labels(p, "mebeauty", (1.0, 5.0))[0].problem.startswith("rating out of range")


def test_mebeauty_needs_its_header(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("Filename,Rating\nftw1.jpg,2\n")
    with pytest.raises(ValueError, match="path,score,gender,ethnicity,split"):
        read_labels(p, "mebeauty", (1.0, 10.0))


@pytest.mark.parametrize("reader, name, expected", [
    ("mebeauty", "female/asian/x.jpg", ("f", "asian")), ("mebeauty", "male/mideastern/y.jpg", ("m", "mideastern")),
    ("mebeauty", "female/x.jpg", None), ("mebeauty", "girl/asian/x.jpg", None), ("mebeauty", "female/elf/x.jpg", None),
    ("scut", "ftw1.jpg", ("f", "caucasian")), ("scut", "AM2.jpg", ("m", "asian")), ("scut", "x.jpg", None),
])
def test_name_says(reader, name, expected):
    assert name_says(reader, name) == expected
