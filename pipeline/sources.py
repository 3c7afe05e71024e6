"""Readers for the supported photo layouts -> one list of label rows, plus file-name parsing.

Layouts (`ingest.source`):
* `synthetic`, `facescore`: `<path>/FaceScore.csv` (`Filename,Rating`) and `<path>/images/` (or `image/`).
* `scut`: SCUT-FBP5500 - `<path>/Images/` (or `images/`) and a `name rating` text file: the first of
  `SCUT-FBP5500_labels.txt` (../shared), `train_test_files/All_labels.txt` (the release),
  `All_labels.txt` that exists; a course copy with only `FaceScore.csv` falls back to it.

Gender and group come from the file name: v1/course names `ftw12.jpg` (f/m, t, w/y) and v2 names
`AF12.jpg` (A/C = Asian/Caucasian, F/M). Nothing here decides to drop a row: malformed lines are
returned with a reason and the ingest stage quarantines them.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.tasks import RATING_RANGE

GROUPS = {"w": "caucasian", "y": "asian", "C": "caucasian", "A": "asian"}
V1 = re.compile(r"^(?P<g>[fm])t(?P<grp>[wy])\d+\.(jpe?g|png)$", re.IGNORECASE)
V2 = re.compile(r"^(?P<grp>[AC])(?P<g>[FM])\d+\.(jpe?g|png)$")
# label files each source looks for when ingest.label_file is null, in order of preference
DEFAULT_LABELS = {"synthetic": ("FaceScore.csv",), "facescore": ("FaceScore.csv",),
                  "scut": ("SCUT-FBP5500_labels.txt", "train_test_files/All_labels.txt", "All_labels.txt",
                           "FaceScore.csv")}
IMAGE_DIRS = ("images", "image", "Images")


@dataclass(frozen=True)
class LabelRow:
    """One line of a label file. `problem` is set when the line itself is unusable."""
    line: int
    filename: str
    rating: float
    problem: str | None = None


def parse_name(filename: str) -> tuple[str, str] | None:
    """'ftw12.jpg' -> ('f', 'caucasian'); 'AM3.jpg' -> ('m', 'asian'); unknown pattern -> None."""
    m = V1.match(filename) or V2.match(filename)
    if not m:
        return None
    return m["g"].lower(), GROUPS[m["grp"] if m["grp"] in "AC" else m["grp"].lower()]


def _rating(text: str) -> tuple[float, str | None]:
    try:
        value = float(text)
    except ValueError:
        return math.nan, "rating is not a number"
    if math.isnan(value):
        return value, "rating is not a number"
    if not RATING_RANGE[0] <= value <= RATING_RANGE[1]:
        return value, f"rating out of range {RATING_RANGE}"
    return value, None


def _row(line: int, fields: list[str]) -> LabelRow:
    if len(fields) != 2:
        return LabelRow(line, fields[0] if fields else "", math.nan, f"malformed line ({len(fields)} fields)")
    rating, problem = _rating(fields[1].strip())
    return LabelRow(line, fields[0].strip(), rating, problem)


def read_labels(label_path: Path, source: str) -> list[LabelRow]:
    """Parses a course CSV (`.csv`, with header) or a SCUT `name rating` file into LabelRows."""
    with open(label_path, encoding="utf-8-sig", newline="") as f:
        if source == "scut" and Path(label_path).suffix.lower() != ".csv":
            rows = [line.split() for line in f]
            return [_row(i, r) for i, r in enumerate(rows, start=1) if r]
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header] != ["filename", "rating"]:
            raise ValueError(f"{label_path}: expected header 'Filename,Rating', got {header}")
        return [_row(i, r) for i, r in enumerate(reader, start=2) if r]


def locate(source: str, path: str | Path, label_file: str | None) -> tuple[Path, Path]:
    """Finds the label file and the image folder of a data set; raises FileNotFoundError."""
    root = Path(path)
    candidates = [root / name for name in ((label_file,) if label_file else DEFAULT_LABELS[source])]
    labels = next((c for c in candidates if c.is_file()), None)
    if labels is None:
        raise FileNotFoundError(f"no label file ({', '.join(map(str, candidates))}) - see ingest.path / ingest.label_file")
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return labels, root / name
    raise FileNotFoundError(f"no image folder ({'/'.join(IMAGE_DIRS)}) under {root}")


def escapes(filename: str) -> bool:
    """True for names that would leave the image folder ('../x.jpg', '/etc/passwd', 'a/../../b')."""
    p = PurePosixPath(filename.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or len(p.parts) != 1
