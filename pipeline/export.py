"""A finished run's results -> one folder, ready to be packaged and served elsewhere (`make gpu-train`).

    python -m pipeline.export --serving models/serving.json --out out/gpu

Writes, per task, the weights bundle the train stage saved (`model.pt`, loadable with
`torch.load(weights_only=True)`), its training curves and its test metrics and report, the refit on
every photo (`final.pt`, `final.json`: what is served; a copy of model.pt when the refit is off); the
packaged champions as BentoML exports (`<tag name>.bentomodel`, from `bentoml models export`), and
`serving.json` naming them. On the serving machine:

    bentoml models import out/gpu/faces-gender.bentomodel    # and faces-rating
    cp out/gpu/serving.json models/ && make serve

The folder is written under a temporary name and renamed at the end: a killed export leaves the
previous one whole.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

TASKS = ("gender", "rating")
FILES = {"models/{task}": ("model.pt", "history.json", "final.pt", "final.json"),
         "reports/eval/{task}": ("metrics.json", "groups.json", "report.md")}


def export(serving: Path, out: Path, root: Path = Path(".")) -> list[Path]:
    """Copies the run's files and exports the BentoML models named in `serving` -> the files written."""
    tags = {task: entry["tag"] for task, entry in json.loads(serving.read_text()).items()}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for task in TASKS:
        (tmp / task).mkdir(parents=True)
        for folder, names in FILES.items():
            for name in names:
                shutil.copy2(root / folder.format(task=task) / name, tmp / task / name)
    bentoml = Path(sys.executable).parent / "bentoml"
    for tag in tags.values():
        target = tmp / f"{tag.split(':')[0]}.bentomodel"
        subprocess.run([str(bentoml), "models", "export", tag, str(target)], check=True, capture_output=True)
    shutil.copy2(serving, tmp / "serving.json")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return sorted(p for p in out.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description="Copy a run's models, metrics and BentoML exports into one folder")
    ap.add_argument("--serving", required=True, type=Path, help="models/serving.json of the run")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    for path in export(args.serving, args.out):
        print(f"export: {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
