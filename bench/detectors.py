"""The face detectors considered, on photos as people take them (MEBeauty's val part) and on the synthetic
scenes (bench/wild.py): how often a face is found, how often the eyes are, and what the step costs.

    python bench/detectors.py --mebeauty ../shared/data/mebeauty [--wild data/wild] [--limit 212]

Candidates, all installed offline from the package registries with their weights:
* `haar-alt2` - OpenCV's `haarcascade_frontalface_alt2.xml` (the wheel's cv2.data), box framing: the
  face step before alignment;
* `haar-alt2+eyes` - the same box, then dlib's 5-point shape predictor (`face_recognition_models`,
  CC0) for the eyes; the crop turned and scaled by them (params.yaml `ingest.face`: the one in use);
* `haar-default` - OpenCV's `haarcascade_frontalface_default.xml`, box framing;
* `dlib-hog+eyes` - dlib's HOG frontal detector (built into the dlib wheel) + the same eyes.

Quality is counted on each photo as it is (any size, as the service gets it): found (not a 422), eyes
plausible (the fit agrees with the box), and the eye line's turn (how far from level the faces are).
Cost: the photos re-encoded at ~1 MP (JPEG q90), decode + face step + crop, p50 over the photos, both
cores for OpenCV, minus a centre crop of the same photos: what the face step adds per 1 MP photo.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core import face as F  # noqa: E402
from pipeline.core.config import load_params  # noqa: E402
from pipeline.core.preprocess import ImageError, crop_square, decode_rgb, frame, open_image  # noqa: E402


def _hog_frame(data: bytes, size: int, cfg) -> tuple[np.ndarray, tuple | None]:
    """dlib's HOG detector + the same eyes: the photo decoded so that the smallest face searched for
    (min_face of the shorter side) is HOG's 80 px window -> (crop, eyes)."""
    rgb = decode_rgb(open_image(data, 10**8), min_side=math.ceil(80 / cfg.min_face))
    k = min(1.0, 80 / cfg.min_face / min(rgb.size))
    grey = rgb.convert("L").resize((round(rgb.width * k), round(rgb.height * k)), Image.Resampling.BOX)
    found = _hog()(np.asarray(grey), 0)
    if not found:
        raise ImageError("no face")
    r = max(found, key=lambda b: b.width())
    # HOG's box is tighter than Haar's: its side ~0.8 of Haar's on SCUT, so widen it for the square
    face = F.Face(r.left() / k, r.top() / k, r.width() / k * 1.25, r.height() / k * 1.25, 0.0, 1)
    face = dataclasses.replace(face, x=face.x - face.w * 0.1, y=face.y - face.h * 0.1)
    eyes = F.eyes(rgb, face, cfg)
    square = F.eye_square(*eyes, cfg) if eyes else F.face_square(face, cfg)
    return crop_square(rgb, square, size), eyes


_HOG = []


def _hog():
    import dlib

    if not _HOG:
        _HOG.append(dlib.get_frontal_face_detector())
    return _HOG[0]


def candidates(cfg) -> dict:
    """name -> a function bytes -> eyes-or-None (raises ImageError 'no face')."""
    def haar(c):
        def run(data: bytes):
            img = open_image(data, 10**8)
            rgb = decode_rgb(img, min_side=math.ceil(96 / (c.min_face * c.margin)))
            found = F.detect(rgb, c)
            if not found:
                raise ImageError("no face")
            out = F.eyes(rgb, found[0], c) if c.landmarks == "dlib5" else None   # what framing() does, once
            crop_square(rgb, F.eye_square(*out, c) if out else F.face_square(found[0], c), 96)
            return out
        return run
    return {"haar-alt2": haar(dataclasses.replace(cfg, landmarks="none")),
            "haar-alt2+eyes": haar(dataclasses.replace(cfg, landmarks="dlib5")),
            "haar-default": haar(dataclasses.replace(cfg, landmarks="none", cascade="haarcascade_frontalface_default.xml")),
            "dlib-hog+eyes": lambda data: _hog_frame(data, 96, cfg)[1]}


def one_mp(data: bytes) -> bytes:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    k = (1_000_000 / (img.width * img.height)) ** 0.5
    buf = io.BytesIO()
    img.resize((round(img.width * k), round(img.height * k)), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def measure(photos: list[bytes], run, timing: list[bytes]) -> dict:
    found, eyes, turns = 0, 0, []
    for data in photos:
        try:
            e = run(data)
        except ImageError:
            continue
        found += 1
        if e is not None:
            eyes += 1
            turns.append(abs(math.degrees(math.atan2(e[1][1] - e[0][1], e[1][0] - e[0][0]))))
    times = []
    for data in timing:
        t = time.perf_counter()
        with contextlib.suppress(ImageError):
            run(data)
        times.append(time.perf_counter() - t)
    return {"found": found / len(photos), "eyes": eyes / len(photos),
            "turn_p50": statistics.median(turns) if turns else float("nan"),
            "turn_p90": float(np.quantile(turns, 0.9)) if turns else float("nan"), "ms_p50": 1e3 * statistics.median(times)}


def centre_ms(timing: list[bytes]) -> float:
    times = []
    for data in timing:
        t = time.perf_counter()
        frame(open_image(data, 10**8), 96, None)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mebeauty", type=Path, default=ROOT.parent / "shared" / "data" / "mebeauty")
    ap.add_argument("--part", default="val", help="MEBeauty part (labels.csv `split`)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many photos (0: all)")
    ap.add_argument("--timing", type=int, default=60, help="photos re-encoded at 1 MP for the cost")
    ap.add_argument("--wild", type=Path, help="also the synthetic scenes of bench/wild.py (Haar candidates)")
    args = ap.parse_args()
    cfg = load_params(ROOT / "params.yaml").ingest.face
    labels = pd.read_csv(args.mebeauty / "labels.csv")
    paths = labels.loc[labels["split"] == args.part, "path"].drop_duplicates().tolist()
    paths = paths[:args.limit] if args.limit else paths
    photos = [(args.mebeauty / p).read_bytes() for p in paths if (args.mebeauty / p).is_file()]
    timing = [one_mp(d) for d in photos[:args.timing]]
    base = centre_ms(timing)
    print(f"MEBeauty {args.part}: {len(photos)} photos as taken; cost on {len(timing)} of them at ~1 MP "
          f"(decode + centre crop: {base:.1f} ms p50)")
    print("| detector | face found | eyes found | eye line turn p50 / p90 | face step, ms per 1 MP photo (p50) |")
    print("|---|--:|--:|--:|--:|")
    for name, run in candidates(cfg).items():
        m = measure(photos, run, timing)
        print(f"| {name} | {m['found']:.1%} | {m['eyes']:.1%} | {m['turn_p50']:.1f} / {m['turn_p90']:.1f} deg | "
              f"{m['ms_p50'] - base:.1f} |", flush=True)
    if args.wild:
        from faces import detection

        table = pd.read_csv(args.wild / "wild.csv")
        for name, c in (("haar-alt2", dataclasses.replace(cfg, landmarks="none")), ("haar-alt2+eyes", cfg)):
            d = detection(args.wild, table, c, 96)
            print(f"scenes ({name}): found {d['recall']:.1%} of {d['face_scenes']} face scenes (IoU >= 0.4), "
                  f"{d['empty_answered_no_face']:.1%} of {d['empty_scenes']} empty scenes answered 'no face'; "
                  f"face step {d['face_step_added_ms_p50']:.1f} ms (one thread)")


if __name__ == "__main__":
    main()
