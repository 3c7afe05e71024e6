"""Synthetic face photos: the default data, so a fresh machine runs the whole pipeline.

Writes `<out>/images/*.jpg` and `<out>/FaceScore.csv` (`Filename,Rating`) in the course layout.
Names follow the course: `{g}t{grp}{i}.jpg`, g = `f`/`m` (gender), grp = `w`/`y` (two appearance
groups, standing in for Caucasian/Asian). Run: `python -m pipeline.stages.synth --out data/synthetic`.

Generative rules (each face i draws from its own RNG seeded with (seed, i), so the set is
deterministic and any face can be regenerated alone):

* Gender (50/50) shows through several cues, none of which decides alone:
  hair (f: long, falling behind the shoulders; m: short cap, 30 % with a receding line),
  face shape (m: 8 % wider jaw), brows (m: thicker and lower), lips (f: redder and fuller),
  stubble (m: 50 % have a shaded chin). Each cue has per-face noise.
* Group (50/50): skin tone (w: pinker/lighter, y: warmer/yellower), hair colour (w: brown, blond
  or black; y: black or dark brown), eye height (y: 25 % flatter eye ellipses).
* Three latent traits, each uniform in [0, 1]: symmetry S (1 - S shifts the left eye, brow and a
  mouth corner by up to 14 % of the face width), proportion P (1 - P moves the eye spacing away from
  0.46 x face width, up to +-35 %), smoothness M (1 - M sets the count of up to 12 skin blemishes,
  each 2.5-4.5 % of the face width, and the strength of skin-texture noise).
* Rating = clip(1 + 4 * (0.40 S + 0.35 P + 0.25 M) + e, 1, 5), e ~ N(0, noise):
  mean 3, so "attractive" means symmetric, well-proportioned, smooth - all visible in pixels.
* Photo jitter: background colour, head shift (+-6 %), scale (+-8 %), rotation (+-8 deg) and a
  global brightness factor (0.8..1.2).
"""
from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

SKIN = {"w": (236, 198, 178), "y": (228, 192, 148)}
HAIR = {"w": [(92, 60, 36), (200, 165, 100), (40, 30, 25)], "y": [(20, 18, 18), (55, 38, 28)]}


@dataclass(frozen=True)
class Face:
    """The sampled identity of one synthetic face (what the rating is a function of)."""
    gender: str
    group: str
    symmetry: float
    proportion: float
    smoothness: float
    rating: float


def sample_face(rng: np.random.Generator, noise: float) -> Face:
    """Draws gender, group and the three latent traits, and the rating they imply."""
    gender = "f" if rng.random() < 0.5 else "m"
    group = "w" if rng.random() < 0.5 else "y"
    s, p, m = rng.random(3)
    score = 0.40 * s + 0.35 * p + 0.25 * m
    rating = float(np.clip(1 + 4 * score + rng.normal(0, noise), 1.0, 5.0))
    return Face(gender, group, float(s), float(p), float(m), round(rating, 4))


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _draw_hair(d: ImageDraw.ImageDraw, face: Face, box: tuple[float, ...], colour, rng) -> None:
    """Long hair behind the head for f, a short cap on top for m."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if face.gender == "f":
        d.rounded_rectangle((x0 - 0.12 * w, y0 - 0.10 * h, x1 + 0.12 * w, y1 + 0.30 * h),
                            radius=int(0.35 * w), fill=colour)
    else:
        top = y0 - 0.06 * h
        cut = 0.30 if rng.random() < 0.7 else 0.18   # 30 % with a receding hair line
        d.chord((x0 - 0.03 * w, top, x1 + 0.03 * w, y0 + 2 * cut * h), 180, 360, fill=colour)


def _draw_features(d: ImageDraw.ImageDraw, face: Face, box, rng) -> None:
    """Eyes, brows, nose, mouth; asymmetry and eye spacing follow the latent traits."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    asym = (1 - face.symmetry) * 0.14 * w * rng.choice([-1, 1])
    spacing = 0.46 * w * (1 + (1 - face.proportion) * 0.35 * rng.choice([-1, 1]))
    eye_y, eye_w = y0 + 0.42 * h, 0.10 * w
    eye_h = eye_w * (0.45 if face.group == "y" else 0.6)
    brow_t = (0.035 if face.gender == "m" else 0.018) * h * rng.uniform(0.8, 1.2)
    brow_gap = (0.07 if face.gender == "m" else 0.10) * h
    for side, dx in ((-1, asym), (1, 0.0)):
        ex = cx + side * spacing / 2 + dx
        ey = eye_y + (dx * 0.5 if side < 0 else 0)
        d.ellipse((ex - eye_w, ey - eye_h, ex + eye_w, ey + eye_h), fill=(250, 250, 250))
        d.ellipse((ex - eye_h * 0.7, ey - eye_h * 0.7, ex + eye_h * 0.7, ey + eye_h * 0.7), fill=(50, 35, 25))
        by = ey - brow_gap
        d.rectangle((ex - eye_w * 1.1, by - brow_t, ex + eye_w * 1.1, by + brow_t), fill=(45, 32, 25))
    d.line((cx, eye_y + 0.05 * h, cx - 0.03 * w, y0 + 0.64 * h), fill=(150, 110, 90), width=max(1, int(w / 60)))
    lip = (205, 70, 85) if face.gender == "f" else (165, 100, 95)
    lip_h = (0.045 if face.gender == "f" else 0.028) * h
    my = y0 + 0.76 * h
    d.chord((cx - 0.16 * w, my - lip_h, cx + 0.16 * w + asym, my + lip_h * 1.5), 0, 180, fill=lip)
    d.chord((cx - 0.16 * w, my - lip_h * 1.2, cx + 0.16 * w + asym, my + lip_h), 180, 360, fill=lip)


def _draw_skin_marks(d: ImageDraw.ImageDraw, face: Face, box, skin, rng) -> None:
    """Blemishes (count grows as smoothness falls) and stubble for half of the men."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if face.gender == "m" and rng.random() < 0.5:
        shade = tuple(max(0, c - 45) for c in skin)
        d.chord((x0 + 0.12 * w, y0 + 0.55 * h, x1 - 0.12 * w, y1), 0, 180, fill=shade)
    for _ in range(int(round((1 - face.smoothness) * 12))):
        bx, by = rng.uniform(x0 + 0.2 * w, x1 - 0.2 * w), rng.uniform(y0 + 0.25 * h, y1 - 0.15 * h)
        r = rng.uniform(0.025, 0.045) * w
        d.ellipse((bx - r, by - r, bx + r, by + r), fill=(150, 70, 65))


def render_face(face: Face, size: int, rng: np.random.Generator) -> Image.Image:
    """Draws `face` as a `size` x `size` RGB photo with pose, scale and lighting jitter."""
    bg = tuple(int(c) for c in rng.integers(60, 230, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    scale = size * rng.uniform(0.92, 1.08)
    cx = size / 2 + rng.uniform(-0.06, 0.06) * size
    cy = size / 2 + rng.uniform(-0.06, 0.06) * size
    half_w = 0.27 * scale * (1.08 if face.gender == "m" else 1.0) * rng.uniform(0.96, 1.04)
    half_h = 0.36 * scale
    box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    skin = _jitter(rng, SKIN[face.group], 12)
    hair = _jitter(rng, HAIR[face.group][rng.integers(len(HAIR[face.group]))], 10)
    _draw_hair(d, face, box, hair, rng)
    d.rectangle((cx - 0.35 * half_w, cy + 0.8 * half_h, cx + 0.35 * half_w, size), fill=skin)  # neck
    d.ellipse(box, fill=skin)
    _draw_skin_marks(d, face, box, skin, rng)
    _draw_features(d, face, box, rng)
    texture = rng.normal(0, 2 + 10 * (1 - face.smoothness), (size, size, 1))
    arr = np.clip(np.asarray(img, dtype=np.float32) + texture, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr).filter(ImageFilter.GaussianBlur(0.6))
    img = img.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR, fillcolor=bg)
    return ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))


def generate(out: Path, count: int, size: int, seed: int, noise: float) -> list[tuple[str, float]]:
    """Writes `count` faces as JPEGs plus FaceScore.csv under `out`; returns (filename, rating)."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        face = sample_face(rng, noise)
        name = f"{face.gender}t{face.group}{i + 1}.jpg"
        render_face(face, size, rng).save(images / name, quality=90)
        rows.append((name, face.rating))
    with open(out / "FaceScore.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("Filename", "Rating"), *rows])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline import tracking
    from pipeline.core.config import load_params

    params = load_params(args.params)
    cfg = params.synth
    rows = generate(args.out, cfg.count, cfg.size, cfg.seed, cfg.noise)
    ratings = np.array([r for _, r in rows])
    females = sum(name.startswith("f") for name, _ in rows)
    print(f"synth: wrote {len(rows)} faces ({females} f / {len(rows) - females} m), "
          f"rating mean {ratings.mean():.2f} sd {ratings.std():.2f} -> {args.out}")
    with tracking.stage_run(params, "synth", cfg):
        tracking.log_metrics({"faces": len(rows), "female": females, "rating_mean": float(ratings.mean())})


if __name__ == "__main__":
    main()
