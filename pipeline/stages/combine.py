"""Combine stage: the sources' ingested photos -> one array, one metadata table, one quarantine table.

    python -m pipeline.stages.combine --sources data/sources --out data/ingested --report reports/ingest.json

Stacks `data/sources/<name>/` for every name in `ingest.sources`, in that order (a folder of a source
that is no longer listed is ignored). Rows are keyed `<source>/<file>` (`filename`), so two sources may
use the same file names; `source` says where each row came from and `rating` stays on its source's own
scale (the train stage maps the scales, pipeline/core/scales.py). The report sums the counts and keeps them
per source; the copy is chunked, so memory stays bounded whatever the sizes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.atomic import atomic_path, write_text
from pipeline.core.sources import META_COLUMNS, QUARANTINE_COLUMNS

COLUMNS = ["source", *META_COLUMNS]


def combine(folders: dict[str, Path], out: Path, chunk: int = 512) -> tuple[pd.DataFrame, pd.DataFrame]:
    """{source name: its ingest folder} -> writes out/images.npy; returns (meta, quarantine), keyed
    `<source>/<file>`. Raises ValueError when the sources' image sizes differ."""
    metas, bad, arrays = [], [], []
    for name, folder in folders.items():
        meta = pd.read_parquet(folder / "meta.parquet")
        arrays.append(np.load(folder / "images.npy", mmap_mode="r"))
        if len(arrays[-1]) < len(meta) or arrays[-1].shape[1:] != arrays[0].shape[1:]:
            raise ValueError(f"combine: {folder} holds {arrays[-1].shape}, {len(meta)} rows; "
                             f"the first source {arrays[0].shape[1:]}")
        metas.append(meta.assign(source=name, filename=name + "/" + meta["filename"])[COLUMNS])
        q = pd.read_csv(folder / "quarantine.csv", dtype={"filename": str, "detail": str}, keep_default_na=False)
        bad.append(q.assign(source=name, filename=name + "/" + q["filename"])[["source", *QUARANTINE_COLUMNS]])
    meta = pd.concat(metas, ignore_index=True)
    n = len(meta)
    with atomic_path(out / "images.npy") as part:          # a kill mid-copy never leaves a short array
        final = np.lib.format.open_memmap(part, "w+", np.uint8, (n, *arrays[0].shape[1:]))
        row = 0
        for arr, m in zip(arrays, metas, strict=True):
            for i in range(0, len(m), chunk):
                j = min(i + chunk, len(m))
                final[row + i:row + j] = arr[i:j]
            row += len(m)
        final.flush()
        del final
    return meta, pd.concat(bad, ignore_index=True)


def report(meta: pd.DataFrame, quarantine: pd.DataFrame, names: list[str]) -> dict:
    """Counts overall and per source: rows in = kept + quarantined in each."""
    per = {}
    for name in names:
        m, q = meta[meta["source"] == name], quarantine[quarantine["source"] == name]
        per[name] = {"rows_in": len(m) + len(q), "kept": len(m), "quarantined": len(q),
                     "female": int((m["gender"] == "f").sum()), "male": int((m["gender"] == "m").sum()),
                     "groups": m["group"].value_counts().sort_index().to_dict(),
                     "by_reason": q["reason"].value_counts().to_dict()}
    total = {k: sum(p[k] for p in per.values()) for k in ("rows_in", "kept", "quarantined", "female", "male")}
    return {**total, "quarantined_fraction": round(total["quarantined"] / max(total["rows_in"], 1), 6),
            "sources": per}


def main() -> None:
    ap = argparse.ArgumentParser(description="Stack the ingested sources into data/ingested/")
    ap.add_argument("--sources", required=True, type=Path, help="folder of the per-source ingest folders")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--report", required=True, type=Path, help="counts JSON (DVC metrics)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline import tracking
    from pipeline.core.config import load_params

    params = load_params(args.params)
    names = [s.name for s in params.ingest.sources]
    args.out.mkdir(parents=True, exist_ok=True)
    meta, quarantine = combine({n: args.sources / n for n in names}, args.out)
    with atomic_path(args.out / "meta.parquet") as tmp:
        meta.to_parquet(tmp, index=False)
    write_text(args.out / "quarantine.csv", quarantine.to_csv(index=False))
    rep = report(meta, quarantine, names)
    write_text(args.report, json.dumps(rep, indent=2) + "\n")
    print(f"combine: {rep['kept']} photos from {len(names)} source(s): "
          + ", ".join(f"{n} {p['kept']}" for n, p in rep["sources"].items()))
    with tracking.stage_run(params, "combine", tags={"sources": ",".join(names)}):
        tracking.log_metrics({f"{k}": v for k, v in rep.items() if isinstance(v, (int, float))}
                             | {f"{n}_{k}": v for n, p in rep["sources"].items()
                                for k, v in p.items() if isinstance(v, int)})
        tracking.log_table(meta, name=f"{params.ingest.dataset}-ingested", source=str(args.out.resolve()))
        tracking.log_artifacts([args.out / "quarantine.csv", args.report], "combine")


if __name__ == "__main__":
    main()
