"""A recipe's estimate over several seeds, as mean +- sd: what one 495-photo test split cannot say.

    python -m pipeline.cli.estimate --profile scut --data ../shared/data/facescore --seeds 0 1 2
    make estimate PROFILE=scut DATA=../shared/data/facescore SEEDS="0 1 2"

Each seed is a different split (`split.seed`: other test photos) and a different initialisation and
batch order (`train.<task>.seed`), run as a DVC experiment of the profile up to evaluate (so each one is in
`dvc exp show` and its stages are MLflow runs), with the refit off (the estimate is of the split
models) and `evaluate.promote: false`: a model trained on one split must not become the champion by
being re-scored on another split's test photos, some of which it trained on. After each seed the
test metrics are added to `--out` (written whole each time: a killed run keeps the seeds done).
The workspace is left with the last seed's experiment applied (`git checkout params.yaml` undoes it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from pipeline.cli.profile import exp_command, exp_name, profile_overrides
from pipeline.core.atomic import write_text
from pipeline.core.config import ParamsError

HEADLINE = {"gender": ("accuracy",), "rating": ("pearson", "mae", "rmse")}


def seed_sets(seed: int) -> list[str]:
    """The overrides that make one seed's run: its own split and initialisation, nothing registered."""
    return [f"split.seed={seed}", f"train.gender.seed={seed}", f"train.rating.seed={seed}",
            "refit.enabled=false", "evaluate.promote=false"]


def summarise(runs: dict[int, dict]) -> dict:
    """{seed: {task: metrics}} -> {"<task>_<metric>": {mean, sd, min, max, n}} (sd with n - 1; 0 for one run)."""
    out = {}
    for task, keys in HEADLINE.items():
        for key in keys:
            vals = [r[task][key] for r in runs.values()]
            out[f"{task}_{key}"] = {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                                    "min": min(vals), "max": max(vals), "n": len(vals)}
    return out


def read_metrics(root: Path) -> dict:
    return {task: {k: json.loads((root / f"reports/eval/{task}/metrics.json").read_text())[k] for k in keys}
            for task, keys in HEADLINE.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description="Run a profile under several seeds -> mean +- sd of the test metrics")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--data", default="")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one more override (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("reports/estimate.json"))
    args = ap.parse_args()
    runs: dict[int, dict] = {}
    for seed in args.seeds:
        try:
            sets = profile_overrides(args.profile, args.data or None, sets=[*args.set, *seed_sets(seed)])
        except (OSError, ParamsError) as e:
            sys.exit(f"estimate: {e}")
        # up to evaluate: its test metrics are the estimate; param_report and package have nothing to add,
        # and package would look for a champion that no estimate run may make (promote false)
        cmd = exp_command(exp_name(f"{Path(args.profile).stem}-seed{seed}"), sets, ["evaluate"])
        print(f"estimate: seed {seed}: {' '.join(cmd)}", flush=True)
        if subprocess.call(cmd) != 0:
            sys.exit(f"estimate: seed {seed} failed; {args.out} has the seeds before it")
        runs[seed] = read_metrics(Path("."))
        summary = summarise(runs)
        write_text(args.out, json.dumps({"profile": args.profile, "sets": args.set, "runs": runs,
                                         "summary": summary}, indent=1) + "\n")
    for key, s in summary.items():
        print(f"estimate: {key:16s} {s['mean']:.4f} +- {s['sd']:.4f}  (min {s['min']:.4f}, max {s['max']:.4f}, "
              f"{s['n']} seeds)")


if __name__ == "__main__":
    main()
