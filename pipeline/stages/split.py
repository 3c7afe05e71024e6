"""Split stage: train / val / test file lists, stratified by source x gender x group, or an official split.

    python -m pipeline.stages.split --meta data/ingested/meta.parquet --out data/split --sizes reports/split.json

Writes `<out>/{train,val,test}.txt` (one file name per line, like SCUT-FBP5500's own split files)
and a sizes JSON (DVC metrics). `method: official` reads `train.txt` / `test.txt`
(`name rating` lines, the SCUT-FBP5500 60/40 format) from `split.official_dir` for the first source
(its rows are keyed `<source>/<name>`; the other sources' rows are left out) and carves the validation
part out of the official training part, stratified the same way.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline.core.atomic import write_text

PARTS = ("train", "val", "test")


class SplitLeak(ValueError):
    """A photo in two parts of the split: every test metric would be inflated."""


def strata(meta: pd.DataFrame) -> pd.Series:
    """source x gender x group label per row, e.g. 'mebeauty/f/asian' ('f/asian' without a source)."""
    cell = meta["gender"] + "/" + meta["group"]
    return meta["source"] + "/" + cell if "source" in meta else cell


def stratified(meta: pd.DataFrame, val: float, test: float, seed: int) -> dict[str, list[str]]:
    """Splits file names into train/val/test with every gender x group cell in the same proportion."""
    names, labels = meta["filename"], strata(meta)
    rest, test_names = train_test_split(names, test_size=test, stratify=labels, random_state=seed)
    rest_labels = labels.loc[rest.index]
    train, val_names = train_test_split(rest, test_size=val / (1 - test), stratify=rest_labels, random_state=seed)
    return check_disjoint({"train": sorted(train), "val": sorted(val_names), "test": sorted(test_names)})


def read_official(folder: Path) -> dict[str, list[str]]:
    """Reads SCUT-style `train.txt` / `test.txt` (`name [rating]` per line)."""
    return {part: [line.split()[0] for line in (folder / f"{part}.txt").read_text().splitlines() if line.strip()]
            for part in ("train", "test")}


def official(meta: pd.DataFrame, lists: dict[str, list[str]], val: float, seed: int) -> dict[str, list[str]]:
    """Keeps the official train/test membership (of the rows that were ingested) and carves val from train."""
    known = set(meta["filename"])
    train_meta = meta[meta["filename"].isin(set(lists["train"]))]
    train, val_names = train_test_split(train_meta["filename"], test_size=val, stratify=strata(train_meta),
                                        random_state=seed)
    test = [n for n in lists["test"] if n in known]
    return check_disjoint({"train": sorted(train), "val": sorted(val_names), "test": sorted(test)})


def check_disjoint(parts: dict[str, list[str]]) -> dict[str, list[str]]:
    """Asserts that no file name is in two parts (a leak would inflate every test metric)."""
    seen: dict[str, str] = {}
    for part, names in parts.items():
        for n in names:
            if n in seen:
                raise SplitLeak(f"{n} is in both {seen[n]} and {part}")
            seen[n] = part
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description="Split the ingested rows into train/val/test")
    ap.add_argument("--meta", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--sizes", required=True, type=Path, help="part sizes JSON (DVC metrics)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline import tracking
    from pipeline.core.config import load_params

    params = load_params(args.params)
    cfg = params.split
    meta = pd.read_parquet(args.meta)
    if cfg.method == "official":
        if not cfg.official_dir:
            raise SystemExit("split: method=official needs split.official_dir (a folder with train.txt, test.txt)")
        first = params.ingest.sources[0].name
        lists = {p: [f"{first}/{n}" for n in names] for p, names in read_official(Path(cfg.official_dir)).items()}
        parts = official(meta, lists, cfg.val, cfg.seed)
    else:
        parts = stratified(meta, cfg.val, cfg.test, cfg.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for part, names in parts.items():
        write_text(args.out / f"{part}.txt", "".join(f"{n}\n" for n in names))      # data.read_names reads them
    by_part = {p: meta[meta["filename"].isin(set(n))] for p, n in parts.items()}
    sizes = {p: len(n) for p, n in parts.items()}
    cells = {p: strata(m).value_counts().sort_index().to_dict() for p, m in by_part.items()}
    write_text(args.sizes, json.dumps({**sizes, "cells": cells}, indent=2) + "\n")
    print("split: " + ", ".join(f"{p} {n}" for p, n in sizes.items()) + f" ({cfg.method}, seed {cfg.seed})")
    with tracking.stage_run(params, "split", cfg):
        tracking.log_metrics({f"{p}_rows": n for p, n in sizes.items()})
        for p, m in by_part.items():
            tracking.log_table(m, name=f"{params.ingest.dataset}-{p}", source=str(args.out / f"{p}.txt"), context=p)
        tracking.log_artifacts([args.sizes], "split")


if __name__ == "__main__":
    main()
