"""The in-the-wild dev set: SCUT faces as people photograph each other, built from the 3300 photos.

    python bench/wild.py --out data/wild [--faces 400 --empty 40 --seed 0 --names data/split/test.txt]

Each face scene takes one SCUT photo, cuts the head out with a soft elliptical mask (face, hair, neck),
scales it so the face covers 15-55 % of the scene's shorter side, turns it by up to +-12 degrees,
places it anywhere in a ~1 MP cluttered scene (gradients, shapes, stripes, checkers, noise, skin-tone
blobs) and saves it as a JPEG of quality 45-95. Scenes without a face are the same clutter, with
skin-tone blobs in half of them. `wild.csv` holds per scene: the source photo, its labels and the
face box in scene pixels (where the face of the source photo, as framed in SCUT, lands), or no box.

Only photos named by --names are used (default: the pipeline's test split when it exists), so the set
stays apart from the photos that picked the epochs (validation) and trained the weights. Never
commit its output: it is made of SCUT-FBP5500 photos (non-commercial research licence).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.atomic import atomic_path, write_text  # noqa: E402
from pipeline.core.data import read_names  # noqa: E402
from pipeline.core.sources import locate, parse_name, read_labels  # noqa: E402

SCENES = [(1024, 768), (1152, 864), (1280, 960), (768, 1024), (864, 1152), (1000, 1000), (1280, 720)]
# Where SCUT's face sits in its 350x350 photo: the median Haar box (docs/face-step.md).
SCUT_FACE = (176.0, 182.0, 228.0)   # centre x, centre y, side
COLUMNS = ["scene", "source", "gender", "group", "rating", "face", "box_x", "box_y", "box_w", "box_h",
           "angle", "quality"]


def clutter(rng: np.random.Generator, w: int, h: int, blobs: int) -> Image.Image:
    """A busy background: gradient, 30-80 shapes, stripes/checkers, skin-tone blobs, sensor noise."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    base = (a * (1 - t) + b * t).repeat(w, axis=1).astype(np.uint8)
    img = Image.fromarray(base)
    d = ImageDraw.Draw(img, "RGBA")
    for _ in range(int(rng.integers(30, 80))):
        x0, y0 = int(rng.integers(-50, w)), int(rng.integers(-50, h))
        x1, y1 = x0 + int(rng.integers(10, w // 3)), y0 + int(rng.integers(10, h // 3))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(90, 256)),)
        kind = rng.integers(0, 4)
        if kind == 0:
            d.rectangle((x0, y0, x1, y1), fill=fill)
        elif kind == 1:
            d.ellipse((x0, y0, x1, y1), fill=fill)
        elif kind == 2:
            d.line((x0, y0, x1, y1), fill=fill, width=int(rng.integers(1, 12)))
        else:
            pts = [(int(rng.integers(x0, x1 + 1)), int(rng.integers(y0, y1 + 1))) for _ in range(5)]
            d.polygon(pts, fill=fill)
    for _ in range(int(rng.integers(1, 4))):                    # textures: stripes or a checkerboard
        x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        pw, ph, p = int(rng.integers(60, w // 2)), int(rng.integers(60, h // 2)), int(rng.integers(4, 24))
        col = tuple(int(v) for v in rng.integers(0, 256, 3)) + (200,)
        checker = rng.random() < 0.5
        for i in range(0, pw, 2 * p):
            for j in range(0, ph, 2 * p) if checker else [0]:
                d.rectangle((x0 + i, y0 + j, x0 + i + p, y0 + (j + p if checker else ph)), fill=col)
    for _ in range(blobs):                                      # head-sized skin-tone ellipses, no features
        cx, cy, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(40, min(w, h) // 4))
        tone = (int(rng.integers(150, 240)), int(rng.integers(100, 190)), int(rng.integers(80, 160)), 255)
        d.ellipse((cx - r, cy - int(1.3 * r), cx + r, cy + int(1.3 * r)), fill=tone)
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5)))), np.float32)
    arr += rng.normal(0, 6, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def head_mask(size: int) -> Image.Image:
    """A feathered ellipse over face, hair and neck of a SCUT photo (350x350 framing)."""
    m = Image.new("L", (size, size), 0)
    s = size / 350
    ImageDraw.Draw(m).ellipse((25 * s, 5 * s, 325 * s, 345 * s), fill=255)
    return m.filter(ImageFilter.GaussianBlur(12 * s))


def place_face(scene: Image.Image, photo: Image.Image, rng: np.random.Generator) -> tuple[list[float], float]:
    """Pastes the head of `photo` into `scene` (in place) -> (face box [x, y, w, h] in scene, angle)."""
    w, h = scene.size
    cx0, cy0, side0 = (v * photo.width / 350 for v in SCUT_FACE)
    side = float(rng.uniform(0.15, 0.55)) * min(w, h)
    k = side / side0
    n = max(8, round(photo.width * k))
    head = photo.convert("RGB").resize((n, n), Image.Resampling.LANCZOS)
    mask = head_mask(n)
    angle = float(rng.uniform(-12, 12))
    head = head.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    mask = mask.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    # the face centre, relative to the head's centre, turned with it (PIL turns counter-clockwise)
    dx, dy = (cx0 - photo.width / 2) * k, (cy0 - photo.width / 2) * k
    a = math.radians(angle)
    fx, fy = head.width / 2 + dx * math.cos(a) + dy * math.sin(a), head.height / 2 - dx * math.sin(a) + dy * math.cos(a)
    x = int(rng.integers(int(side / 2 - fx), max(int(side / 2 - fx) + 1, int(w - side / 2 - fx))))
    y = int(rng.integers(int(side / 2 - fy), max(int(side / 2 - fy) + 1, int(h - side / 2 - fy))))
    scene.paste(head, (x, y), mask)
    return [x + fx - side / 2, y + fy - side / 2, side, side], angle


def build(photos: list[tuple[Path, dict]], out: Path, faces: int, empty: int, seed: int) -> pd.DataFrame:
    """Writes `faces` face scenes and `empty` face-free scenes as JPEGs + wild.csv -> the table."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    picks = rng.choice(len(photos), size=faces, replace=faces > len(photos))
    rows = []
    for i in range(faces + empty):
        w, h = SCENES[int(rng.integers(len(SCENES)))]
        has_face = i < faces
        scene = clutter(rng, w, h, blobs=0 if has_face else int(rng.integers(0, 2)) * int(rng.integers(1, 4)))
        row = {"scene": f"{'face' if has_face else 'empty'}{i:04d}.jpg", "face": has_face, "angle": 0.0}
        if has_face:
            path, labels = photos[int(picks[i])]
            with Image.open(path) as photo:
                box, row["angle"] = place_face(scene, photo, rng)
            row.update(source=path.name, **labels, box_x=box[0], box_y=box[1], box_w=box[2], box_h=box[3])
        row["quality"] = int(rng.integers(45, 96))
        with atomic_path(out / row["scene"]) as tmp:
            scene.save(tmp, "JPEG", quality=row["quality"])
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    write_text(out / "wild.csv", table.to_csv(index=False))
    return table


def labelled_photos(data: Path, names: Path | None) -> list[tuple[Path, dict]]:
    """SCUT photos with labels, restricted to the file names listed in `names` when given (a split list:
    keys `scut/<file>`; the SCUT rows of a run with several sources)."""
    label_file, image_dir = locate("scut", str(data), None)
    keep = {n.removeprefix("scut/") for n in read_names(names) if "/" not in n.removeprefix("scut/")} if names else None
    out = []
    for r in read_labels(label_file, "scut"):
        parsed = parse_name(r.filename)
        if r.problem or parsed is None or (keep is not None and r.filename not in keep):
            continue
        out.append((image_dir / r.filename, {"gender": parsed[0], "group": parsed[1], "rating": r.rating}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "facescore")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "wild")
    ap.add_argument("--names", type=Path, default=None, help="file names to draw from (default: test split)")
    ap.add_argument("--faces", type=int, default=400)
    ap.add_argument("--empty", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    split = ROOT / "data" / "split" / "test.txt"
    names = args.names or split
    if names.resolve() == split:            # the pipeline's split names SCUT photos only after a real-photo run
        from pipeline.core.config import load_params

        if load_params(ROOT / "params.yaml").ingest.dataset == "synthetic":
            sys.exit("wild: data/split/test.txt is the synthetic run's split; run `make repro PROFILE=scut "
                     "DATA=...` first, or pass --names")
    photos = labelled_photos(args.data, names if names.is_file() else None)
    print(f"wild: {len(photos)} source photos ({names if names.is_file() else 'all: no split found'})")
    table = build(photos, args.out, args.faces, args.empty, args.seed)
    print(f"wild: {int(table['face'].sum())} face scenes + {int((~table['face']).sum())} empty -> {args.out}")


if __name__ == "__main__":
    main()
