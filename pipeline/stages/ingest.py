"""Ingest stage, once per source: photos + labels -> one uint8 array, a metadata table and a quarantine table.

    python -m pipeline.stages.ingest --source scut --out data/sources/scut --report reports/ingest/scut.json

`--source` names an entry of `ingest.sources` (dvc.yaml runs one stage per entry; `combine` stacks them).
Every input row ends either in `meta.parquet` (row i describes `images.npy[i]`) or in
`quarantine.csv` with a reason; the counts reconcile (rows in = kept + quarantined, where rows in =
label lines + image files that no label line names). The stage fails only when the quarantined
fraction exceeds `ingest.max_quarantine_fraction`.

Memory: decoded photos stream from the worker processes into a memory-mapped uint8 file, so the
stage never holds the set as floats (or at all) in RAM.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.core.atomic import atomic_path, write_text
from pipeline.core.face import FaceConfig
from pipeline.core.preprocess import ImageError, lazy_uint8, open_image
from pipeline.core.sources import (
    META_COLUMNS,
    QUARANTINE_COLUMNS,
    SourceConfig,
    escapes,
    locate,
    parse_name,
    read_labels,
)


@dataclass
class IngestResult:
    images: np.ndarray          # (N, S, S, 3) uint8 (a memmap when written to disk)
    meta: pd.DataFrame          # META_COLUMNS, row i <-> images[i]
    quarantine: pd.DataFrame    # QUARANTINE_COLUMNS
    rows_in: int

    def counts(self) -> dict[str, int]:
        return {"rows_in": self.rows_in, "kept": len(self.meta), "quarantined": len(self.quarantine)}


def _labels_of(r) -> tuple[str, str] | None:
    """(gender, group) of a label row: its own columns (MEBeauty) or its file name (SCUT, course)."""
    if r.gender is not None and r.group is not None:
        return r.gender, r.group
    return parse_name(r.filename)


def _inside(root: Path, filename: str) -> bool:
    """The file, symlinks resolved, lies under the (resolved) image folder: a link may not lead out of it."""
    return (root / filename).resolve().is_relative_to(root)


def plan(label_rows, image_dir: Path) -> tuple[list[dict], list[dict], int]:
    """Checks label rows without decoding: -> (rows to decode, quarantine rows, rows in)."""
    todo: list[dict] = []
    bad: list[dict] = []
    seen: dict[str, int] = {}
    root = image_dir.resolve()                          # once, not per row
    for r in label_rows:
        reason = r.problem
        parsed = None
        if reason is None and any(c in r.filename for c in "\r\n\x00"):
            reason = "line break in the file name"        # the split's file lists hold one name a line
        if reason is None and (escapes(r.filename) or not _inside(root, r.filename)):
            reason = "path leaves the data folder"
        if reason is None and (parsed := _labels_of(r)) is None:
            reason = "unknown name prefix"
        if reason is None and r.filename in seen:
            reason = f"duplicate filename (line {seen[r.filename]} kept)"
        if reason is None and not (image_dir / r.filename).is_file():
            reason = "missing file"
        if reason:
            bad.append({"filename": r.filename, "line": r.line, "reason": reason, "detail": ""})
            continue
        seen[r.filename] = r.line
        assert parsed is not None                     # every row without a reason parsed (for mypy)
        todo.append({"filename": r.filename, "line": r.line, "gender": parsed[0], "group": parsed[1],
                     "rating": r.rating})
    labelled = {r.filename for r in label_rows}
    files = (p.relative_to(image_dir).as_posix() for p in image_dir.rglob("*") if p.is_file())
    orphans = sorted(n for n in files if n not in labelled)
    bad += [{"filename": n, "line": 0, "reason": "image without a label", "detail": ""} for n in orphans]
    return todo, bad, len(label_rows) + len(orphans)


def _decode(job: tuple[str, int, int, FaceConfig | None]) -> tuple[np.ndarray | None, str, str, str, int, int]:
    """Worker: path -> (array | None, reason, detail, sha256, width, height)."""
    path, size, max_pixels, face = job
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, "unreadable file", type(e).__name__, "", 0, 0
    digest = hashlib.sha256(data).hexdigest()
    try:
        img = open_image(data, max_pixels)
        w, h = img.size                 # the photo's own size: a JPEG draft decode shrinks img.size
        return lazy_uint8(img, size, face), "", "", digest, w, h
    except ImageError as e:
        return None, e.reason, e.detail, digest, 0, 0


def ingest(label_rows, image_dir: Path, size: int, max_pixels: int, out_npy: Path | None = None,
           workers: int = 1, face: FaceConfig | None = None) -> IngestResult:
    """Decodes and resizes every usable photo in parallel; quarantines the rest with a reason.

    Args:
        label_rows: `sources.LabelRow`s in file order.
        image_dir: folder the file names are relative to.
        size: side of the stored square images.
        max_pixels: decompression-bomb threshold.
        out_npy: where to write the (N, size, size, 3) array; None keeps it in memory (tests).
        workers: decode processes.
        face: crop the face found by this detector config (None: centre crop); a photo without a
            face is quarantined as 'no face'.
    """
    todo, bad, rows_in = plan(label_rows, image_dir)
    scratch = np.lib.format.open_memmap(out_npy.with_suffix(".tmp.npy"), "w+", np.uint8,
                                        (max(len(todo), 1), size, size, 3)) if out_npy else \
        np.empty((len(todo), size, size, 3), np.uint8)
    kept: list[dict] = []
    jobs = [(str(image_dir / t["filename"]), size, max_pixels, face) for t in todo]
    # forkserver, not fork: a forked child of a process whose OpenCV thread pool has run deadlocks
    with get_context("forkserver").Pool(workers, initializer=_one_thread) if workers > 1 else _Inline() as pool:
        results = pool.imap(_decode, jobs, chunksize=16)
        for t, (arr, reason, detail, digest, w, h) in zip(todo, tqdm(results, total=len(jobs), desc="ingest", disable=None), strict=True):
            if arr is None:
                bad.append({"filename": t["filename"], "line": t["line"], "reason": reason, "detail": detail})
                continue
            scratch[len(kept)] = arr
            kept.append({**t, "sha256": digest, "orig_width": w, "orig_height": h})
    meta = pd.DataFrame(kept, columns=META_COLUMNS + ["line"]).drop(columns="line")
    quarantine = pd.DataFrame(bad, columns=QUARANTINE_COLUMNS).sort_values(["line", "filename"], ignore_index=True)
    images = _finalise(scratch, len(kept), out_npy)
    return IngestResult(images, meta, quarantine, rows_in)


def _one_thread() -> None:
    """Decode processes already use every core: OpenCV (the face detector) gets one thread each."""
    import cv2

    cv2.setNumThreads(1)


class _Inline:
    """Pool stand-in for workers <= 1 (no process start-up, easier to debug)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(fn, jobs, chunksize=1):
        return map(fn, jobs)


def _finalise(scratch: np.ndarray, n: int, out_npy: Path | None, chunk: int = 512) -> np.ndarray:
    """Copies the first n rows of the scratch array to the final file in chunks (bounded memory)."""
    if out_npy is None:
        return scratch[:n]
    with atomic_path(out_npy) as part:         # a kill mid-copy never leaves a short images.npy
        final = np.lib.format.open_memmap(part, "w+", np.uint8, (n, *scratch.shape[1:]))
        for i in range(0, n, chunk):
            j = min(i + chunk, n)
            final[i:j] = scratch[i:j]
        final.flush()
        del final
    tmp = Path(scratch.filename)                # type: ignore[attr-defined]  # a np.memmap
    del scratch
    tmp.unlink()
    return np.load(out_npy, mmap_mode="r")


def main() -> None:
    ap = argparse.ArgumentParser(description="Ingest one source's photos into data/sources/<name>/")
    ap.add_argument("--source", required=True, help="a name in ingest.sources")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--report", required=True, type=Path, help="counts JSON (DVC metrics)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline import tracking
    from pipeline.core.config import load_params

    params = load_params(args.params)
    cfg = params.ingest
    src = _source(cfg.sources, args.source)
    labels_path, image_dir = locate(src.reader, src.path, src.label_file)
    rows = read_labels(labels_path, src.reader, src.scale)
    print(f"ingest {src.name}: labels from {labels_path}, images from {image_dir}, {cfg.crop} crop")
    args.out.mkdir(parents=True, exist_ok=True)
    workers = cfg.workers or os.cpu_count() or 1
    face = cfg.face if cfg.crop == "face" else None
    res = ingest(rows, image_dir, cfg.image_size, cfg.max_pixels, args.out / "images.npy", workers, face)
    with atomic_path(args.out / "meta.parquet") as tmp:
        res.meta.to_parquet(tmp, index=False)
    write_text(args.out / "quarantine.csv", res.quarantine.to_csv(index=False))
    counts = res.counts()
    if counts["rows_in"] != counts["kept"] + counts["quarantined"]:             # a row dropped silently
        raise SystemExit(f"ingest: rows in != kept + quarantined: {counts}")
    fraction = counts["quarantined"] / max(counts["rows_in"], 1)
    report = {**counts, "quarantined_fraction": round(fraction, 6),
              "by_reason": res.quarantine["reason"].value_counts().to_dict(),
              "female": int((res.meta["gender"] == "f").sum()), "male": int((res.meta["gender"] == "m").sum())}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.report, json.dumps(report, indent=2) + "\n")
    print(f"ingest {src.name}: {counts['rows_in']} rows in = {counts['kept']} kept + {counts['quarantined']} quarantined"
          f" ({fraction:.1%}); {report['female']} f / {report['male']} m; {tuple(res.images.shape)} uint8")
    for reason, n in report["by_reason"].items():
        print(f"  quarantined: {n:5d}  {reason}")
    with tracking.stage_run(params, f"ingest-{src.name}", cfg, tags={"label_file": str(labels_path), "source": src.name}):
        tracking.log_metrics({k: v for k, v in report.items() if isinstance(v, (int, float))})
        tracking.log_table(res.meta, name=f"{src.name}-ingested", source=str(Path(src.path).resolve()))
        tracking.log_artifacts([args.out / "quarantine.csv", args.report], f"ingest-{src.name}")
    if fraction > cfg.max_quarantine_fraction:
        sys.exit(f"ingest {src.name}: FAILED - {fraction:.1%} of the rows were quarantined, more than "
                 f"ingest.max_quarantine_fraction={cfg.max_quarantine_fraction:.1%}; see {args.out / 'quarantine.csv'}")


def _source(sources: tuple[SourceConfig, ...], name: str) -> SourceConfig:
    found = [s for s in sources if s.name == name]
    if not found:
        raise SystemExit(f"ingest: no source {name!r} in ingest.sources ({', '.join(s.name for s in sources)})")
    return found[0]


if __name__ == "__main__":
    main()
