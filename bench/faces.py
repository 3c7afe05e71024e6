"""The face step measured: SCUT framing, detection on the in-the-wild dev set, scores, speed.

    python bench/faces.py --framing                  # SCUT: faces per photo, where the box sits
    python bench/faces.py --wild data/wild           # detection recall / false positives (+ models)
    make faces                                       # builds data/wild, then all of the above

--framing runs the detector of params.yaml (`ingest.face`) on every SCUT photo and prints how many get
exactly one face and the median framing (crop side / box side, centre offset in box sides) that
params.yaml's `margin`, `offset_x`, `offset_y` hold. --wild scores bench/wild.py's scenes: a face scene
counts as found when the largest face's box overlaps the true one with IoU >= 0.4; an empty scene
with any face is a false positive. With --models (models/serving.json, what `make repro` packaged)
it also scores gender accuracy and rating Pearson on the face scenes next to the same faces' own
SCUT photos (aligned), both through the service's path (`frame` + the models). Timings are one
thread, p50 over the scenes: decode + crop, centre crop vs face crop, on the ~1 MP scenes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_params  # noqa: E402
from pipeline.face import detect  # noqa: E402
from pipeline.preprocess import ImageError, frame, open_image, open_rgb  # noqa: E402
from pipeline.sources import locate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "facescore"


def framing(image_dir: Path, cfg, every: int = 1) -> dict:
    """Detector on SCUT photos -> counts and the median framing of the largest face."""
    rows, times = [], []
    for p in sorted(image_dir.glob("*.jpg"))[::every]:
        rgb = open_rgb(p, 10**8)
        t = time.perf_counter()
        faces = detect(rgb, cfg)
        times.append(time.perf_counter() - t)
        f = faces[0] if faces else None
        rows.append({"file": p.name, "n": len(faces), "w": f.w if f else np.nan,
                     "cx": f.x + f.w / 2 if f else np.nan, "cy": f.y + f.h / 2 if f else np.nan,
                     "side": min(rgb.size), "W": rgb.width, "H": rgb.height})
    d = pd.DataFrame(rows)
    return {"photos": len(d), "exactly_one": float((d.n == 1).mean()), "none": int((d.n == 0).sum()),
            "several": int((d.n > 1).sum()), "none_files": d.file[d.n == 0].tolist()[:10],
            "margin": float((d.side / d.w).median()), "offset_x": float(((d.W / 2 - d.cx) / d.w).median()),
            "offset_y": float(((d.H / 2 - d.cy) / d.w).median()),
            "box_side_p10_p90": [float(v) for v in (d.w / d.side).quantile([0.1, 0.9])],
            "detect_ms_p50": 1e3 * statistics.median(times)}
