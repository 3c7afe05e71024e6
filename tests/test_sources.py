import math

import pytest

from pipeline.sources import escapes, locate, parse_name, read_labels


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
    ("sub/ftw1.jpg", True), ("..\\ftw1.jpg", True),
])
def test_escapes(name, bad):
    assert escapes(name) is bad
