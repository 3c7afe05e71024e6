"""Stage `params`: params.yaml against the schema (pipeline/core/config.py), first in dvc.yaml.

A typo in params.yaml (or in `dvc exp run -S key=value`) fails here in one line, before any other stage
removes its outputs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from pipeline.core.atomic import write_text
from pipeline.core.config import ParamsError, load_params


def main() -> None:
    """`python -m pipeline.stages.params [--params F] [--out F]`."""
    ap = argparse.ArgumentParser(description="Check params.yaml against the schema")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, help="written when the check passes (what the other stages wait for)")
    args = ap.parse_args()
    try:
        load_params(args.params)
    except (OSError, ParamsError, yaml.YAMLError) as e:
        sys.exit(f"params: {e}")
    if args.out:
        write_text(args.out, "params.yaml matches the schema in pipeline/core/config.py\n")   # constant: reruns nothing
    print(f"params: {args.params} ok")


if __name__ == "__main__":
    main()
