"""Readers for the supported photo layouts -> one list of label rows, plus file-name parsing.

A run reads one or more sources (`ingest.sources`, a list of `SourceConfig`); each names its reader:
* `synthetic`, `facescore`: `<path>/FaceScore.csv` (`Filename,Rating`) and `<path>/images/` (or `image/`).
* `scut`: SCUT-FBP5500 - `<path>/Images/` (or `images/`) and a `name rating` text file: the first of
  `SCUT-FBP5500_labels.txt` (../shared), `train_test_files/All_labels.txt` (the release),
  `All_labels.txt` that exists; a course copy with only `FaceScore.csv` falls back to it.
* `mebeauty`: MEBeauty - `<path>/labels.csv` (`path,score,gender,ethnicity,split`, paths under
  `images/<gender>/<ethnicity>/`) and `<path>/images/`.

SCUT/course rows take gender and group from the file name: v1/course names `ftw12.jpg` (f/m, t, w/y)
and v2 names `AF12.jpg` (A/C = Asian/Caucasian, F/M). MEBeauty rows carry both as columns. Each source
states its rating scale (`scale`): a rating outside it is a problem of that line. Nothing here decides
to drop a row: malformed lines are returned with a reason and the ingest stage quarantines them.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from pipeline.core.tasks import GROUPS

NAME_GROUPS = {"w": "caucasian", "y": "asian", "C": "caucasian", "A": "asian"}
V1 = re.compile(r"^(?P<g>[fm])t(?P<grp>[wy])\d+\.(jpe?g|png)$", re.IGNORECASE)
V2 = re.compile(r"^(?P<grp>[AC])(?P<g>[FM])\d+\.(jpe?g|png)$")
# label files each source looks for when ingest.label_file is null, in order of preference
DEFAULT_LABELS = {"synthetic": ("FaceScore.csv",), "facescore": ("FaceScore.csv",),
                  "scut": ("SCUT-FBP5500_labels.txt", "train_test_files/All_labels.txt", "All_labels.txt",
                           "FaceScore.csv"),
                  "mebeauty": ("labels.csv",)}
IMAGE_DIRS = ("images", "image", "Images")
# the tables ingest writes per source (combine adds `source` in front)
META_COLUMNS = ["filename", "gender", "group", "rating", "sha256", "orig_width", "orig_height"]
QUARANTINE_COLUMNS = ["filename", "line", "reason", "detail"]
MEBEAUTY_HEADER = ["path", "score", "gender", "ethnicity", "split"]


@dataclass(frozen=True)
class SourceConfig:
    """One photo source of a run (params.yaml `ingest.sources`)."""
    name: str                      # names its rows (`<name>/<file>` keys, meta `source`) and its reports
    reader: Literal["synthetic", "facescore", "scut", "mebeauty"]   # its layout (see above)
    path: str                      # folder with the photos and the label file
    label_file: str | None         # relative to path; None = the reader's usual file
    scale: tuple[float, float]     # its rating scale: SCUT 1-5, MEBeauty 1-10


@dataclass(frozen=True)
class LabelRow:
    """One line of a label file. `problem` is set when the line itself is unusable."""
    line: int
    filename: str                  # relative to the source's image folder
    rating: float                  # on the source's own scale
    problem: str | None = None
    gender: str | None = None      # 'f' / 'm' where the label file says (else from the file name)
    group: str | None = None       # one of tasks.GROUPS where the label file says


def parse_name(filename: str) -> tuple[str, str] | None:
    """'ftw12.jpg' -> ('f', 'caucasian'); 'AM3.jpg' -> ('m', 'asian'); unknown pattern -> None."""
    m = V1.match(filename) or V2.match(filename)
    if not m:
        return None
    return m["g"].lower(), NAME_GROUPS[m["grp"] if m["grp"] in "AC" else m["grp"].lower()]


def name_says(reader: str, filename: str) -> tuple[str, str] | None:
    """What a file's name (SCUT, course) or folders (MEBeauty: `female/asian/x.jpg`) say of gender and
    group: the validate stage checks the labels against it."""
    if reader == "mebeauty":
        parts = PurePosixPath(filename).parts
        if len(parts) != 3 or parts[0] not in ("female", "male") or parts[1] not in GROUPS:
            return None
        return parts[0][0], parts[1]
    return parse_name(PurePosixPath(filename).name)


def _rating(text: str, scale: tuple[float, float]) -> tuple[float, str | None]:
    try:
        value = float(text)
    except ValueError:
        return math.nan, "rating is not a number"
    if math.isnan(value):
        return value, "rating is not a number"
    if not scale[0] <= value <= scale[1]:
        return value, f"rating out of range {tuple(scale)}"
    return value, None


def _row(line: int, fields: list[str], scale: tuple[float, float]) -> LabelRow:
    if len(fields) != 2:
        return LabelRow(line, fields[0] if fields else "", math.nan, f"malformed line ({len(fields)} fields)")
    rating, problem = _rating(fields[1].strip(), scale)
    return LabelRow(line, fields[0].strip(), rating, problem)


def _mebeauty_row(line: int, fields: list[str], scale: tuple[float, float]) -> LabelRow:
    """`images/female/asian/x.jpg,6.2,female,asian,train` -> LabelRow('female/asian/x.jpg', 6.2, 'f', 'asian')."""
    if len(fields) != len(MEBEAUTY_HEADER):
        return LabelRow(line, fields[0] if fields else "", math.nan, f"malformed line ({len(fields)} fields)")
    path, score, gender, group = (v.strip() for v in fields[:4])
    name = path.removeprefix("images/")
    rating, problem = _rating(score, scale)
    g = {"female": "f", "male": "m"}.get(gender.lower())
    if problem is None and g is None:
        problem = f"unknown gender {gender[:20]!r}"
    if problem is None and group.lower() not in GROUPS:
        problem = f"unknown ethnicity {group[:20]!r}"
    return LabelRow(line, name, rating, problem, g, group.lower())


def read_labels(label_path: Path, reader: str, scale: tuple[float, float] = (1.0, 5.0)) -> list[LabelRow]:
    """Parses a course CSV (`.csv`, with header), a SCUT `name rating` file or MEBeauty's labels.csv
    into LabelRows; ratings outside `scale` are that line's problem."""
    with open(label_path, encoding="utf-8-sig", newline="") as f:
        if reader == "scut" and Path(label_path).suffix.lower() != ".csv":
            rows = [line.split() for line in f]
            return [_row(i, r, scale) for i, r in enumerate(rows, start=1) if r]
        lines = csv.reader(f)
        header = [h.strip().lower() for h in next(lines, None) or []]
        if reader == "mebeauty":
            if header != MEBEAUTY_HEADER:
                raise ValueError(f"{label_path}: expected header {','.join(MEBEAUTY_HEADER)!r}, got {header}")
            return [_mebeauty_row(i, r, scale) for i, r in enumerate(lines, start=2) if r]
        if header != ["filename", "rating"]:
            raise ValueError(f"{label_path}: expected header 'Filename,Rating', got {header}")
        return [_row(i, r, scale) for i, r in enumerate(lines, start=2) if r]


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
    """True for names that would leave the image folder ('../x.jpg', '/etc/passwd', 'a/../../b');
    a relative path below it ('female/asian/x.jpg', MEBeauty's layout) stays inside."""
    p = PurePosixPath(filename.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or not p.parts or p.parts[0] in ("", ".")
