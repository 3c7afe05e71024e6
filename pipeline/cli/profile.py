"""Profiles: a partial params.yaml (profiles/<name>.yaml) for another data set or budget, run the DVC way
as `dvc exp run -S key=value ...`, so every profile run is a DVC experiment and its stages MLflow runs.

    python -m pipeline.cli.profile --profile scut --data ../shared/data/facescore   # = make repro PROFILE=scut DATA=...
    python -m pipeline.cli.profile --profile scut --set train.rating.epochs=60 --dry-run

The merged params are checked against the schema (pipeline/core/config.py) before DVC is called, so a
typo in a profile or a `--set` fails in one line and nothing runs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config import Params, ParamsError, _build, check, merge


def flat_overrides(over: dict, prefix: str = "") -> list[str]:
    """{'train': {'gender': {'epochs': 9}}} -> ['train.gender.epochs=9'] (values as YAML flow text)."""
    out = []
    for k, v in over.items():
        if isinstance(v, dict):
            out += flat_overrides(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={override_value(v)}")
    return out


def override_value(v) -> str:
    """A value as `dvc exp run -S` (Hydra's override grammar) reads it back: JSON for scalars and lists,
    but mappings with bare keys (`{name:"scut",scale:[1,5]}`): Hydra refuses quoted keys."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{override_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(override_value(x) for x in v) + "]"
    return json.dumps(v)


def _profile(profile: str | Path, data: str | None) -> tuple[dict, str]:
    """A profile (a name in profiles/ or a YAML path; '' for none) + a data folder -> (overrides, where).
    The data folder replaces the path of the profile's first source."""
    path = Path(profile) if Path(profile).suffix else Path(__file__).parents[2] / "profiles" / f"{profile}.yaml"
    over = (yaml.safe_load(path.read_text(encoding="utf-8")) if profile else None) or {}
    if data:
        sources = [dict(s) for s in over.get("ingest", {}).get("sources") or []]
        if not sources:
            raise ParamsError(f"{path}: --data needs a profile that lists ingest.sources")
        sources[0]["path"] = data
        over = {**over, "ingest": {**over.get("ingest", {}), "sources": sources}}
    return over, (str(path) if profile else "--data")


def _checked(over: dict, where: str, params: str | Path) -> Params:
    with open(params, encoding="utf-8") as f:
        return check(_build(Params, merge(yaml.safe_load(f), over, where), "params"))


def load_profile(profile: str | Path, data: str | None = None, params: str | Path = "params.yaml") -> Params:
    """params.yaml with a profile applied, checked like params.yaml itself."""
    return _checked(*_profile(profile, data), params)


def with_sets(over: dict, sets: list[str]) -> dict:
    """A profile's overrides + `key.path=value` strings (values are YAML), the later ones winning."""
    out = dict(over)
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set {item!r}: expected key.path=value")
        *parents, leaf = key.split(".")
        node: Any = out
        for k in parents:           # a digit indexes a list the profile gives (ingest.sources.1.path)
            if isinstance(node, list):
                node[int(k)] = dict(node[int(k)])
                node = node[int(k)]
            else:
                node[k] = (list if isinstance(node.get(k), list) else dict)(node.get(k) or {})
                node = node[k]
        if isinstance(node, list):
            node[int(leaf)] = yaml.safe_load(text)
        else:
            node[leaf] = yaml.safe_load(text)
    return out


def profile_overrides(profile: str | Path, data: str | None = None,
                      params: str | Path = "params.yaml", sets: Sequence[str] = ()) -> list[str]:
    """A profile + an optional data folder (+ `key=value` sets) -> `-S` overrides, checked: the merged
    params must load, so a typo in a profile or a set fails here, before any stage runs."""
    over, where = _profile(profile, data)          # the profile is read once, checked, then flattened
    over = with_sets(over, list(sets))
    _checked(over, where, params)
    return flat_overrides(over)


def exp_command(name: str, sets: Sequence[str], targets: Sequence[str] = ()) -> list[str]:
    """`dvc exp run -n <name> -S k=v ... [targets]`: one named DVC experiment with these overrides, of the
    whole pipeline or only what `targets` (stages or foreach groups) need."""
    return ["dvc", "exp", "run", "-n", name] + [a for s in sets for a in ("-S", s)] + list(targets)


def exp_name(stem: str) -> str:
    """An experiment name that a rerun does not collide with: `<stem>-<date>-<time>`."""
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def main() -> None:
    ap = argparse.ArgumentParser(description="Run the pipeline as a DVC experiment with a params profile")
    ap.add_argument("--profile", default="", help="name in profiles/ (e.g. scut) or a YAML path")
    ap.add_argument("--data", default="", help="photo folder (the path of the profile's first source)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one more override on top of the profile, e.g. train.rating.epochs=1 (repeatable)")
    ap.add_argument("--name", default="", help="the DVC experiment's name (default: <profile>-<date>-<time>)")
    ap.add_argument("--dry-run", action="store_true", help="print the dvc command, do not run it")
    args = ap.parse_args()
    if args.data and not args.profile:
        # the default params say source `synthetic`: real photos under that name would compete with
        # synthetic champions in the registry
        sys.exit("profile: --data (DATA=) needs a profile that names the source, e.g. PROFILE=scut")
    try:
        sets = profile_overrides(args.profile, args.data or None, sets=args.set)
    except (OSError, ParamsError) as e:
        sys.exit(f"profile: {e}")
    cmd = exp_command(args.name or exp_name(Path(args.profile).stem or "params"), sets)
    print(" ".join(cmd), flush=True)
    if not args.dry_run:
        sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
