"""The face step of the image path: find the face in a photo and frame it the way SCUT frames it.

    faces = detect(rgb, cfg)              # largest first; [] when there is none
    square = face_square(faces[0], cfg)   # the region to crop: SCUT's framing around that face

Detector: OpenCV's Haar cascade `haarcascade_frontalface_alt2.xml`, shipped inside the
opencv-python-headless wheel (BSD-3; pinned in requirements.lock, so nothing is downloaded at first
use). Chosen by measurement against the other cascades (docs/face-step.md): the best recall on
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

Alignment by the eyes (`landmarks: dlib5`): Haar gives a box, no landmarks. dlib's 5-point shape
predictor (`shape_predictor_5_face_landmarks.dat` from the `face_recognition_models` wheel, CC0; run by
the `dlib-bin` wheel, Boost licence; nothing downloaded at first use) places the eye corners inside the
refined box, on a grey copy of the face's square at `ROI_PX` pixels (~1 ms). The crop is then turned so
the eyes are level and scaled by the distance between them: side = `eye_side` x that distance, centre
`eye_drop` distances below the eyes' midpoint, both measured on the SCUT photos (bench/faces.py
--framing), so an aligned SCUT photo is still cropped as SCUT framed it. Eyes that disagree with the
box (distance outside EYE_SPAN of its side, or a turn past MAX_EYE_TURN from it) fall back to the
box framing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

FILL = (128, 128, 128)   # outside the photo: 0 after normalisation (no signal), not black or white
ROI_PX = 160             # the face's square as the shape predictor sees it: the box ~105 px, the eyes ~40 px apart
EYE_SPAN = (0.25, 0.65)  # eye distance / box side of a plausible fit (SCUT: ~0.42)
MAX_EYE_TURN = 30.0      # degrees between the eye line and the box's turn of a plausible fit
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"


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
    landmarks: str          # "dlib5": align by the eyes (dlib's 5-point predictor); "none": box framing only
    eye_side: float         # crop side / eye distance (SCUT framing, landmarks: dlib5)
    eye_drop: float         # crop centre below the eyes' midpoint, in eye distances


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
    """What travels with the model: the detector, the landmark model and their versions."""
    import cv2

    out = f"opencv {cv2.__version__} {cfg.cascade}"
    if cfg.landmarks == "dlib5":
        from importlib.metadata import version

        import dlib

        out += f"; dlib {dlib.__version__} {LANDMARK_MODEL} (face_recognition_models {version('face_recognition_models')})"
    return out


@lru_cache(maxsize=1)
def _shape_predictor():
    """dlib's 5-point model, from the face_recognition_models wheel (its package imports pkg_resources,
    which setuptools no longer ships: the file is found without importing it)."""
    import importlib.util
    from pathlib import Path

    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("face_recognition_models is not installed (requirements.lock)")
    return dlib.shape_predictor(str(Path(spec.origin).parent / "models" / LANDMARK_MODEL))


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
    grey = small = img.convert("L")
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
    return [_refine(grey, faces[0], cfg), *faces[1:]] if faces else []


def _refine(grey: Image.Image, face: Face, cfg: FaceConfig) -> Face:
    """Measures the face's box again in its own SCUT-framed square, scaled to what a SCUT photo is
    searched at: every box is then measured at the scale the training photos' boxes were, so a small
    face (20 px in the first search) gets as precise a crop as a large one."""
    side_px = round(cfg.window / cfg.min_face)
    cx, cy, side, angle = face_square(face, cfg)
    roi = grey_square(grey, (cx, cy, side, angle), side_px)
    boxes, _ = _search(roi, cfg, min_fraction=0.4)      # the face fills ~2/3 of its framed square
    if len(boxes) == 0:
        return face
    u, v, w, h = map(float, boxes[int(np.argmax(boxes[:, 2]))])
    k = side / side_px
    fx, fy = _turned(cx, cy, (u + w / 2 - side_px / 2) * k, (v + h / 2 - side_px / 2) * k, angle)
    return Face(fx - w * k / 2, fy - h * k / 2, w * k, h * k, angle, face.neighbors)


def eyes(img: Image.Image, face: Face, cfg: FaceConfig) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The centres of the eyes (image-left one first) in photo pixels, or None when the fit is not
    plausible for this box (see EYE_SPAN, MAX_EYE_TURN)."""
    import dlib

    square = face_square(face, cfg)
    roi = grey_square(img.convert("L"), square, ROI_PX)
    b = ROI_PX / cfg.margin                                   # the box in the square: side, centre
    cx, cy = ROI_PX / 2 - cfg.offset_x * b, ROI_PX / 2 - cfg.offset_y * b
    shape = _shape_predictor()(roi, dlib.rectangle(round(cx - b / 2), round(cy - b / 2), round(cx + b / 2), round(cy + b / 2)))
    pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(4)], np.float64)
    a, c = sorted((pts[0:2].mean(0), pts[2:4].mean(0)), key=lambda p: p[0])
    span = math.hypot(*(c - a)) / b
    turn = math.degrees(math.atan2(c[1] - a[1], c[0] - a[0]))     # in the square's (upright) frame
    if not EYE_SPAN[0] <= span <= EYE_SPAN[1] or abs(turn) > MAX_EYE_TURN:
        return None
    return _square_to_photo(square, ROI_PX, a), _square_to_photo(square, ROI_PX, c)


def grey_square(grey: Image.Image, square: tuple[float, float, float, float], m: int) -> np.ndarray:
    """`crop_square` for the detector's eyes: a grey photo, bilinear, no oversampling -> (m, m) uint8
    (~0.25 ms against ~1.4 ms for the RGB bicubic crop the model gets). Pixel (u, v) of the result is
    `_square_to_photo(square, m, (u, v))` in the photo."""
    cx, cy, side, angle = square
    a, s = math.radians(angle), side / m
    ca, sa = math.cos(a) * s, math.sin(a) * s
    x0, y0 = cx - ca * m / 2 + sa * m / 2, cy - sa * m / 2 - ca * m / 2
    patch = grey.transform((m, m), Image.Transform.AFFINE, (ca, -sa, x0, sa, ca, y0),
                           resample=Image.Resampling.BILINEAR, fillcolor=FILL[0])
    return np.asarray(patch, dtype=np.uint8)


def _square_to_photo(square: tuple[float, float, float, float], m: int, uv) -> tuple[float, float]:
    """A point of `crop_square(img, square, m, oversample=1)`'s output -> photo pixels."""
    cx, cy, side, angle = square
    return _turned(cx, cy, (uv[0] + 0.5 - m / 2) * side / m, (uv[1] + 0.5 - m / 2) * side / m, angle)


def eye_square(left: tuple[float, float], right: tuple[float, float], cfg: FaceConfig) -> tuple[float, float, float, float]:
    """The region to crop from the eyes: (centre x, centre y, side, angle) with the eyes level."""
    dx, dy = right[0] - left[0], right[1] - left[1]
    d = math.hypot(dx, dy)
    angle = math.degrees(math.atan2(dy, dx))
    cx, cy = _turned((left[0] + right[0]) / 2, (left[1] + right[1]) / 2, 0.0, cfg.eye_drop * d, angle)
    return cx, cy, cfg.eye_side * d, angle


def framing(img: Image.Image, face: Face, cfg: FaceConfig) -> tuple[float, float, float, float]:
    """The square to crop around a found face: by its eyes where `landmarks` says and they are
    plausible, else by its box (SCUT framing either way)."""
    if cfg.landmarks == "dlib5":
        found = eyes(img, face, cfg)
        if found is not None:
            return eye_square(*found, cfg)
    return face_square(face, cfg)


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
