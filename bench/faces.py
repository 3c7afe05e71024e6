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
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.config import load_params  # noqa: E402
from pipeline.core.face import detect, eyes  # noqa: E402
from pipeline.core.preprocess import ImageError, frame, open_image, open_rgb  # noqa: E402
from pipeline.core.sources import locate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "facescore"


def framing(image_dir: Path, cfg, every: int = 1) -> dict:
    """Detector on SCUT photos -> counts and the median framing of the largest face."""
    rows, times, eye_times = [], [], []
    for p in sorted(image_dir.glob("*.jpg"))[::every]:
        rgb = open_rgb(p, 10**8)
        t = time.perf_counter()
        faces = detect(rgb, cfg)
        times.append(time.perf_counter() - t)
        f = faces[0] if faces else None
        t = time.perf_counter()
        e = eyes(rgb, f, cfg) if f else None
        eye_times.append(time.perf_counter() - t)
        rows.append({"file": p.name, "n": len(faces), "w": f.w if f else np.nan,
                     "cx": f.x + f.w / 2 if f else np.nan, "cy": f.y + f.h / 2 if f else np.nan,
                     "side": min(rgb.size), "W": rgb.width, "H": rgb.height, **_eye_row(e, rgb.size)})
    d = pd.DataFrame(rows)
    return {"photos": len(d), "exactly_one": float((d.n == 1).mean()), "none": int((d.n == 0).sum()),
            "several": int((d.n > 1).sum()), "none_files": d.file[d.n == 0].tolist()[:10],
            "margin": float((d.side / d.w).median()), "offset_x": float(((d.W / 2 - d.cx) / d.w).median()),
            "offset_y": float(((d.H / 2 - d.cy) / d.w).median()),
            "box_side_p10_p90": [float(v) for v in (d.w / d.side).quantile([0.1, 0.9])],
            "detect_ms_p50": 1e3 * statistics.median(times), "eyes_ms_p50": 1e3 * statistics.median(eye_times),
            "eyes_found": float(d.eye_d.notna().mean()), "eye_side": float((d.side / d.eye_d).median()),
            "eye_drop": float(d.eye_drop.median()), "eye_turn_p90": float(d.eye_turn.abs().quantile(0.9))}


def _eye_row(e, size: tuple[int, int]) -> dict:
    """Where a SCUT photo's centre sits from its eyes: distance, drop below their midpoint (in
    distances, along the face's own down axis) and the eye line's turn."""
    if e is None:
        return {"eye_d": np.nan, "eye_drop": np.nan, "eye_turn": np.nan}
    (x0, y0), (x1, y1) = e
    d, a = math.hypot(x1 - x0, y1 - y0), math.atan2(y1 - y0, x1 - x0)
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    drop = ((size[0] / 2 - mx) * -math.sin(a) + (size[1] / 2 - my) * math.cos(a)) / d
    return {"eye_d": d, "eye_drop": drop, "eye_turn": math.degrees(a)}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def detection(folder: Path, table: pd.DataFrame, cfg, size: int = 80) -> dict:
    """The face step on the dev set's scenes, as the service runs it (bytes -> frame) -> counts,
    and p50 timings of a centre crop vs a face crop of the same scenes (one thread)."""
    import cv2

    cv2.setNumThreads(1)
    found, empty_ok, several, t_face, t_centre, rows = 0, 0, 0, [], [], []
    for r in table.itertuples():
        data = (folder / r.scene).read_bytes()
        t = time.perf_counter()
        frame(open_image(data, 10**8), size, None)
        t_centre.append(time.perf_counter() - t)
        t = time.perf_counter()
        try:
            f = frame(open_image(data, 10**8), size, cfg)
        except ImageError:
            f = None
        t_face.append(time.perf_counter() - t)
        if r.face:
            hit = f is not None and _iou(f.box, (r.box_x, r.box_y, r.box_w, r.box_h)) >= 0.4
            found += hit
            several += f is not None and f.faces > 1
            rows.append({"scene": r.scene, "found": hit})
        else:
            empty_ok += f is None
    faces, empty = int(table["face"].sum()), int((~table["face"]).sum())
    return {"face_scenes": faces, "recall": found / max(faces, 1), "several_found": several,
            "empty_scenes": empty, "empty_answered_no_face": empty_ok / max(empty, 1),
            "centre_ms_p50": 1e3 * statistics.median(t_centre), "face_ms_p50": 1e3 * statistics.median(t_face),
            "face_step_added_ms_p50": 1e3 * (statistics.median(t_face) - statistics.median(t_centre)),
            "found": pd.DataFrame(rows)}


def scores(folder: Path, table: pd.DataFrame, image_dir: Path, models: Path, tta_flip: bool = True) -> dict:
    """Gender accuracy and rating Pearson of the trained models on the face scenes (face step) next to
    the same faces' own SCUT photos (aligned; the crop the models were trained on), and on the
    scenes' centre crops (what the service did before the face step)."""
    from scipy.stats import pearsonr

    from pipeline.core.model import TaskModel, load_bundle, predict
    from pipeline.core.preprocess import crop_from_contract, load_uint8

    nets, contract = {}, None
    for task in ("gender", "rating"):
        net, bundle = load_bundle(models / task / "model.pt")
        nets[task], size = TaskModel(net, task).eval(), bundle["model_config"]["image_size"]
        contract = bundle.get("preprocess", {"crop": "centre"})
    face = crop_from_contract(contract)
    if face is None:
        raise SystemExit(f"{models}: these models were trained on centre crops; train with ingest.crop=face")
    faces = table[table["face"]]
    views = {"aligned": [], "wild": [], "wild_centre": []}
    keep = []
    for r in faces.itertuples():
        try:
            wild = load_uint8(folder / r.scene, size, 10**8, face)
            aligned = load_uint8(image_dir / r.source, size, 10**8, face)
        except ImageError:
            continue                                  # counted by `detection` (recall)
        views["wild"].append(wild)
        views["aligned"].append(aligned)
        views["wild_centre"].append(load_uint8(folder / r.scene, size, 10**8, None))
        keep.append(r)
    truth = pd.DataFrame(keep)
    out = {"scored": len(truth), "of": len(faces)}
    for view, images in views.items():
        x = np.stack(images)
        p_male = predict(nets["gender"], x, tta_flip=tta_flip)
        rating = predict(nets["rating"], x, tta_flip=tta_flip)
        out[view] = {"gender_accuracy": float(((p_male >= 0.5) == (truth["gender"] == "m")).mean()),
                     "pearson": float(pearsonr(rating, truth["rating"])[0]),
                     "mae": float(np.abs(rating - truth["rating"]).mean())}
    return out


def picture(out: Path, cfg, size: int = 128) -> None:
    """The README's picture, from drawn faces only (SCUT photos never leave ../shared): three scenes with
    the box the service answers, each with the face crop the model sees and the old centre crop."""
    import io

    from PIL import Image, ImageDraw
    from wild import clutter

    from pipeline.core.atomic import atomic_path
    from pipeline.stages.synth import render_face, sample_face

    rng = np.random.default_rng(3)
    h = 2 * size
    canvas = Image.new("RGB", (3 * (int(h * 4 / 3) + size + 24), h + 30), "white")
    x = 0
    for i, (side, pos, tilt) in enumerate([(300, (620, 120), 0), (220, (90, 420), 9), (420, (380, 200), -6)]):
        scene = clutter(rng, 1152, 864, blobs=0)
        face = render_face(sample_face(rng, 0.25), side, rng).rotate(tilt, Image.Resampling.BICUBIC)
        scene.paste(face, pos)
        buf = io.BytesIO()
        scene.save(buf, "JPEG", quality=88)
        f = frame(open_image(buf.getvalue(), 10**8), size, cfg)
        d = ImageDraw.Draw(scene)
        bx, by, bw, bh = f.box
        d.rectangle((bx, by, bx + bw, by + bh), outline=(0, 200, 83), width=8)
        thumb = scene.resize((int(h * 4 / 3), h))
        canvas.paste(thumb, (x, 0))
        canvas.paste(Image.fromarray(f.pixels), (x + thumb.width + 4, 0))
        canvas.paste(Image.fromarray(frame(open_image(buf.getvalue(), 10**8), size, None).pixels).resize((size, size)),
                     (x + thumb.width + 4, size))
        ImageDraw.Draw(canvas).text((x + 4, h + 8), f"upload {i + 1}: box {f.box}; right: face crop, old centre crop",
                                    fill="black")
        x += thumb.width + size + 24
    with atomic_path(out) as tmp:
        canvas.save(tmp, "JPEG", quality=85)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="SCUT-FBP5500 / FaceScore folder")
    ap.add_argument("--framing", action="store_true", help="measure SCUT's framing (all photos)")
    ap.add_argument("--every", type=int, default=1, help="--framing on every n-th photo")
    ap.add_argument("--wild", type=Path, help="a dev set made by bench/wild.py")
    ap.add_argument("--models", type=Path, help="folder with gender/model.pt and rating/model.pt (face crop)")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--picture", type=Path, help="write the README's picture (drawn faces only) here")
    args = ap.parse_args()
    params = load_params(args.params)
    cfg = params.ingest.face
    _, image_dir = locate("scut", str(args.data), None)
    print(f"face step: {cfg}")
    if args.picture:
        picture(args.picture, cfg)
        print(f"picture: {args.picture}")
    if args.framing:
        f = framing(image_dir, cfg, args.every)
        print(f"SCUT: {f['photos']} photos, exactly one face in {f['exactly_one']:.2%} ({f['none']} none: "
              f"{', '.join(f['none_files'])}; {f['several']} with several); detector {f['detect_ms_p50']:.1f} ms p50\n"
              f"  framing: margin {f['margin']:.3f}, offset_x {f['offset_x']:+.3f}, offset_y {f['offset_y']:+.3f} "
              f"(params.yaml: {cfg.margin}, {cfg.offset_x}, {cfg.offset_y}); face box = "
              f"{f['box_side_p10_p90'][0]:.0%}..{f['box_side_p10_p90'][1]:.0%} of the photo side (p10..p90)\n"
              f"  eyes (dlib 5-point) found plausible in {f['eyes_found']:.2%} ({f['eyes_ms_p50']:.1f} ms p50): eye_side "
              f"{f['eye_side']:.3f}, eye_drop {f['eye_drop']:+.3f} (params.yaml: {cfg.eye_side}, {cfg.eye_drop}); "
              f"eye line turned <= {f['eye_turn_p90']:.1f} deg in 90 %")
    if args.wild:
        table = pd.read_csv(args.wild / "wild.csv")
        d = detection(args.wild, table, cfg, params.ingest.image_size)
        print(f"wild ({args.wild}): recall {d['recall']:.2%} of {d['face_scenes']} face scenes "
              f"({d['several_found']} with several faces found); {d['empty_answered_no_face']:.2%} of "
              f"{d['empty_scenes']} empty scenes answered 'no face'\n"
              f"  decode + crop p50, one thread, ~1 MP JPEG: centre {d['centre_ms_p50']:.1f} ms, face "
              f"{d['face_ms_p50']:.1f} ms: the face step adds {d['face_step_added_ms_p50']:.1f} ms")
        if args.models:
            s = scores(args.wild, table, image_dir, args.models, params.evaluate.tta_flip)
            print(f"scores on the {s['scored']} of {s['of']} face scenes whose face was found:")
            print("  | view | gender accuracy | Pearson | MAE |\n  |---|--:|--:|--:|")
            for view in ("aligned", "wild", "wild_centre"):
                v = s[view]
                print(f"  | {view} | {v['gender_accuracy']:.2%} | {v['pearson']:.3f} | {v['mae']:.3f} |")


if __name__ == "__main__":
    main()
