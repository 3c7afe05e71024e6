"""The face step of the image path: find the face in a photo and frame it the way SCUT frames it.

    faces = detect(rgb, cfg)              # largest first; [] when there is none
    square = face_square(faces[0], cfg)   # the region to crop: SCUT's framing around that face

Detector: OpenCV's Haar cascade `haarcascade_frontalface_alt2.xml`, shipped inside the
opencv-python-headless wheel (BSD-3; pinned in requirements.lock, so nothing is downloaded at first
use). Chosen by measurement against the other cascades (README "Faces in photos"): the best recall on
the in-the-wild dev set with no false positives, and exactly one face in every SCUT photo.

It looks for faces on a grey copy whose shorter side is `window / min_face` pixels (a face must cover
at least `min_face` of the photo's shorter side, and `window` is the cascade's own 20 px window), so
its cost does not grow with the photo: ~133 x 177 px for any 4:3 photo. A face tilted beyond the
cascade's reach (~10 degrees) is searched for again in copies turned by +-`roll_deg`; the crop then
turns back by that angle (undoes the tilt).
The largest face's box is then measured again inside its own framed square, scaled like a SCUT photo
(`_refine`): small faces get boxes as precise as the training photos'.
Framing: `margin` (crop side / detector box side) and `offset_x/y` (crop centre - box centre, in box
sides) were measured on the 3300 SCUT photos (bench/faces.py --framing): on a SCUT photo the crop is
the photo itself, give or take the detector's jitter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

FILL = (128, 128, 128)   # outside the photo: 0 after normalisation (no signal), not black or white


@dataclass(frozen=True)
class FaceConfig:
    cascade: str            # file in cv2.data.haarcascades
    min_face: float         # smallest face searched for, as a fraction of the photo's shorter side
    window: int             # ... and its side in the grey copy searched (the cascade's own window: 20)
    scale_factor: float     # cascade pyramid step
    min_neighbors: int      # overlapping raw detections a face needs (the cascade's usual confidence)
    roll_deg: float         # when nothing is found upright, try copies turned by +- this; 0: never
    margin: float           # crop side / detector box side (SCUT framing)
    offset_x: float         # crop centre - box centre, in box sides (SCUT framing)
    offset_y: float


@dataclass(frozen=True)
class Face:
    """A face in photo pixels: an axis-aligned box around its centre, turned by `angle` degrees
    (counter-clockwise, as found), and how many raw windows voted for it (`neighbors`)."""
    x: float
    y: float
    w: float
    h: float
    angle: float
    neighbors: int


def detector_version(cfg: FaceConfig) -> str:
    """What travels with the model: the detector and its weights' version."""
    import cv2

    return f"opencv {cv2.__version__} {cfg.cascade}"


@lru_cache(maxsize=4)
def _cascade(name: str):
    import cv2

    folder = cv2.data.haarcascades                          # type: ignore[attr-defined]  # opencv's stubs lack it
    c = cv2.CascadeClassifier(folder + name)
    if c.empty():
        raise FileNotFoundError(f"Haar cascade {name} not found in {folder}")
    return c


def _search(gray: np.ndarray, cfg: FaceConfig, min_fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The cascade on a grey image: faces of at least `min_fraction` (default: min_face) of its
    shorter side -> (boxes (N, 4) float, neighbour votes (N,))."""
    m = max(cfg.window, math.floor((min_fraction or cfg.min_face) * min(gray.shape)))
    boxes, votes = _cascade(cfg.cascade).detectMultiScale2(
        gray, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors, minSize=(m, m))
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(votes, np.int64).ravel()


def detect(img: Image.Image, cfg: FaceConfig) -> list[Face]:
    """RGB photo -> its faces in the photo's pixels, largest first ([] when none is found).

    Boxes less than half the largest one's side are dropped: in a portrait they are background
    patterns (the cascade's false positives are small), not a second sitter."""
    import cv2

    k = min(1.0, cfg.window / cfg.min_face / min(img.size))
    small = img.convert("L")
    if k < 1.0:
        small = small.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.BOX)
    gray = np.asarray(small)
    k = gray.shape[0] / img.height
    faces: list[Face] = []
    for angle in (0.0, cfg.roll_deg, -cfg.roll_deg) if cfg.roll_deg else (0.0,):
        if angle == 0.0:
            boxes, votes = _search(gray, cfg)
            centres = boxes[:, :2] + boxes[:, 2:] / 2
        else:   # turn the small copy about its centre, search, map the box centres back
            c = ((gray.shape[1] - 1) / 2, (gray.shape[0] - 1) / 2)
            rot = cv2.getRotationMatrix2D(c, angle, 1.0)
            boxes, votes = _search(cv2.warpAffine(gray, rot, gray.shape[::-1], borderMode=cv2.BORDER_REPLICATE), cfg)
            inv = cv2.invertAffineTransform(rot)
            centres = (boxes[:, :2] + boxes[:, 2:] / 2) @ inv[:, :2].T + inv[:, 2]
        faces = [Face(float(cx / k - w / k / 2), float(cy / k - h / k / 2), float(w / k), float(h / k), angle, int(v))
                 for (cx, cy), (_, _, w, h), v in zip(centres, boxes, votes, strict=True)]
        if faces:
            break
    faces.sort(key=lambda f: -f.w)
    faces = [f for f in faces if f.w >= 0.5 * faces[0].w]
    return [_refine(img, faces[0], cfg), *faces[1:]] if faces else []


def _refine(img: Image.Image, face: Face, cfg: FaceConfig) -> Face:
    """Measures the face's box again in its own SCUT-framed square, scaled to what a SCUT photo is
    searched at: every box is then measured at the scale the training photos' boxes were, so a small
    face (20 px in the first search) gets as precise a crop as a large one."""
    import cv2

    side_px = round(cfg.window / cfg.min_face)
    cx, cy, side, angle = face_square(face, cfg)
    roi = cv2.cvtColor(crop_square(img, (cx, cy, side, angle), side_px, oversample=1), cv2.COLOR_RGB2GRAY)
    boxes, _ = _search(roi, cfg, min_fraction=0.4)      # the face fills ~2/3 of its framed square
    if len(boxes) == 0:
        return face
    u, v, w, h = map(float, boxes[int(np.argmax(boxes[:, 2]))])
    k = side / side_px
    fx, fy = _turned(cx, cy, (u + w / 2 - side_px / 2) * k, (v + h / 2 - side_px / 2) * k, angle)
    return Face(fx - w * k / 2, fy - h * k / 2, w * k, h * k, angle, face.neighbors)


def _turned(x: float, y: float, dx: float, dy: float, angle: float) -> tuple[float, float]:
    """(x, y) + the offset (dx, dy) given in a frame turned by `angle` degrees (image y points down)."""
    a = math.radians(angle)
    return x + dx * math.cos(a) - dy * math.sin(a), y + dx * math.sin(a) + dy * math.cos(a)


def face_square(face: Face, cfg: FaceConfig) -> tuple[float, float, float, float]:
    """The region to crop around a face: (centre x, centre y, side, angle), SCUT's framing."""
    side = face.w * cfg.margin
    # the offset is measured in the face's own (upright) frame
    cx, cy = _turned(face.x + face.w / 2, face.y + face.h / 2, cfg.offset_x * face.w, cfg.offset_y * face.w, face.angle)
    return cx, cy, side, face.angle


def crop_square(img: Image.Image, square: tuple[float, float, float, float], size: int,
                oversample: int = 2) -> np.ndarray:
    """Cuts a (possibly turned) square out of the photo and resizes it: -> (size, size, 3) uint8.

    Large crops are first box-reduced by an integer factor (anti-aliased, fast), then sampled with
    bicubic interpolation at 2x the output and resized like `fit_square`. Outside the photo: FILL."""
    cx, cy, side, angle = square
    f = max(1, int(side // (4 * size)))
    if f > 1:
        img = img.reduce(f)
        cx, cy, side = cx / f, cy / f, side / f
    m = oversample * size
    a = math.radians(angle)
    s = side / m
    # output pixel (u, v) -> photo (x, y): the inverse of the turn that made the face upright
    ca, sa = math.cos(a) * s, math.sin(a) * s
    x0 = cx - ca * m / 2 + sa * m / 2
    y0 = cy - sa * m / 2 - ca * m / 2
    patch = img.transform((m, m), Image.Transform.AFFINE, (ca, -sa, x0, sa, ca, y0),
                          resample=Image.Resampling.BICUBIC, fillcolor=FILL)
    if m != size:
        patch = patch.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(patch, dtype=np.uint8)
