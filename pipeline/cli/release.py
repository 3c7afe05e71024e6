"""The served models of a finished run -> one folder that serves anywhere (`make release`).

    make repro PROFILE=real SET=refit.enabled=false     # the real-photo models, scored on the test split
    make release NAME=real                              # -> release/real/
    make serve RELEASE=real                             # a fresh clone: import the archives and serve

A release holds the two champions as `bentoml models export` archives (the package stage's
`models/bento/*.bentomodel`: weights, preprocessing contract and serving facts travel inside), the
`serving.json` naming their tags, each task's test metrics, per-population table and report, a model
card (`README.md`: data, licence, results) and `SHA256SUMS`. No training data: the photos stay where
their licences keep them. The folder is written under a temporary name and renamed at the end, so a
killed release leaves the previous one whole.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from pipeline.core.atomic import sha256_file
from pipeline.core.tasks import SERVED

REPORTS = ("metrics.json", "groups.json", "report.md")
HEADLINE = {"gender": ("accuracy", "roc_auc"), "rating": ("pearson", "mae")}
LICENCE = """The models were trained on the data sets named above. SCUT-FBP5500 and MEBeauty are licensed for
non-commercial research only, and so are weights learned from them: use them to study and teach, not
in a product. No photo is included. A rating is the averaged opinion of a data set's raters, not a
property of a person; MODEL_CARD.md in the repository states the intended use and the limits."""


def _figures(task: str, m: dict) -> str:
    ci = m.get("ci95", {})
    return ", ".join(f"{k} {m[k]:.4f} (95 % CI {ci[k][0]:.3f}–{ci[k][1]:.3f})" if k in ci else f"{k} {m[k]:.4f}"
                     for k in HEADLINE[task] if k in m)


def card(serving: dict, metrics: dict[str, dict], groups: dict[str, dict], commit: str) -> str:
    """The release's model card: where the models come from, their licence, their test figures (all
    test photos, then each source on its own scale)."""
    src = {e.get("source", "?") for e in serving.values()}
    rows = [f"| {task} | all | `{serving[task]['tag']}` | {serving[task].get('weights', '?')} | "
            f"{_figures(task, metrics[task])} |" for task in SERVED]
    for task in SERVED:
        rows += [f"| {task} | {p['group']} (n {p['n']}) | | | {_figures(task, p)} |"
                 for p in groups[task].get("populations", []) if p["grouping"] == "source"]
    return "\n".join([
        f"# Release: models trained on `{', '.join(sorted(src))}`", "",
        f"Built by `make release` from a run of commit `{commit}`. Serve it from the repository root with",
        "`make serve RELEASE=<this folder's name>`.", "",
        "| task | test photos | BentoML tag | weights | test split (held out) |", "|---|---|---|---|---|", *rows, "",
        "`all`: every test photo, ratings on the served 1–5 scale; a source's row: its photos, on its own scale",
        "(MAE in its units). `weights: split` means the served models are the ones these figures measured (no",
        "refit on the test photos). Per population (source × ethnicity × gender): `<task>/groups.json` and",
        "`<task>/report.md`.", "",
        "## Licence", "", LICENCE, "",
    ])


def release(root: Path, out: Path) -> list[Path]:
    """Copies the served models and their reports of the run in `root` into `out` -> the files written."""
    serving = json.loads((root / "models/serving.json").read_text())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    metrics, groups = {}, {}
    for task in SERVED:
        (tmp / task).mkdir(parents=True)
        for name in REPORTS:
            shutil.copy2(root / "reports/eval" / task / name, tmp / task / name)
        metrics[task] = json.loads((tmp / task / "metrics.json").read_text())
        groups[task] = json.loads((tmp / task / "groups.json").read_text())
        archive = root / "models/bento" / f"{serving[task]['tag'].split(':')[0]}.bentomodel"
        shutil.copy2(archive, tmp / archive.name)
    (tmp / "serving.json").write_text(json.dumps(serving, indent=2) + "\n")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    (tmp / "README.md").write_text(card(serving, metrics, groups, commit))
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    sums = "".join(f"{sha256_file(p)}  {p.relative_to(tmp).as_posix()}\n" for p in files)
    (tmp / "SHA256SUMS").write_text(sums)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return sorted(p for p in out.rglob("*") if p.is_file())


def verify(folder: Path) -> None:
    """Raises ValueError when a file of the release is missing or differs from its SHA256SUMS line."""
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    for line in lines:
        digest, name = line.split("  ", 1)
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            raise ValueError(f"release {folder}: {name} is missing or does not match SHA256SUMS")
    if not lines:
        raise ValueError(f"release {folder}: SHA256SUMS is empty")


def main() -> None:
    ap = argparse.ArgumentParser(description="A finished run's served models, reports and card -> one folder")
    ap.add_argument("--out", required=True, type=Path, help="e.g. release/real")
    ap.add_argument("--root", type=Path, default=Path("."), help="the run's working tree")
    ap.add_argument("--verify", action="store_true", help="only check --out against its SHA256SUMS")
    args = ap.parse_args()
    if args.verify:
        try:
            verify(args.out)
        except (OSError, ValueError) as e:
            raise SystemExit(f"release: {e}") from None
        print(f"release: {args.out} matches its SHA256SUMS")
        return
    for path in release(args.root, args.out):
        print(f"release: {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
