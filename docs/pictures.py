"""Regenerates the README's pictures from a finished run (`make pictures`, after `make repro PROFILE=scut ...`).

    python docs/pictures.py [--root .] [--photo service/example.jpg]

Copies the run's plots (rating scatter, gender confusion matrix, both training curves) into docs/
as results-*.png, and takes a screenshot of the demo page: `bentoml serve` of models/serving.json on
a free loopback port, Debian's headless Chromium (Playwright), one photo uploaded. Plots and the
page show no face from the licensed data set: the upload is the project's own drawn example.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))             # bench/servers.py: start `bentoml serve` and wait for /readyz
PLOTS = {"reports/eval/rating/scatter.png": "results-scatter.png",
         "reports/eval/gender/confusion.png": "results-confusion.png",
         "reports/eval/rating/curves.png": "results-curves-rating.png",
         "reports/eval/gender/curves.png": "results-curves-gender.png"}


def copy_plots(root: Path, docs: Path) -> list[Path]:
    out = []
    for src, name in PLOTS.items():
        tmp = docs / f".{name}.tmp"
        shutil.copyfile(root / src, tmp)
        out.append(tmp.rename(docs / name))
    return out


def demo_screenshot(root: Path, photo: Path, target: Path) -> Path:
    """The demo page with `photo`'s answer, as a PNG: this tree's service (bench/servers.py's `serve`),
    serving the models that root's models/serving.json names (from the store in BENTOML_HOME)."""
    from playwright.sync_api import sync_playwright
    from servers import serve, stop

    serving = json.loads((root / "models/serving.json").read_text())
    os.environ.update(FACES_GENDER_MODEL=serving["gender"]["tag"], FACES_RATING_MODEL=serving["rating"]["tag"])
    proc, url = serve(ROOT)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                        args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 900, "height": 700})
            page.goto(url + "/")
            page.set_input_files("#file", str(photo))
            page.click("#go")
            page.wait_for_selector("#rating", timeout=30_000)
            page.screenshot(path=str(target), full_page=True)
            browser.close()
    finally:
        stop([proc])
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description="Regenerate the README's pictures from a finished run")
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--photo", type=Path, default=ROOT / "service/example.jpg")
    args = ap.parse_args()
    for path in [*copy_plots(args.root, ROOT / "docs"), demo_screenshot(args.root, args.photo, ROOT / "docs/demo-page.png")]:
        print(f"pictures: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
