"""The one image preprocessing path, shared by ingest, training, evaluation and the service.

    photo bytes --load_uint8--> (S, S, 3) uint8 --to_tensor--> (N, 3, S, S) float32, normalised

`load_uint8` decodes the photo, then crops it one of two ways (`ingest.crop`, stored with the model):
`centre`, the largest centred square, or `face`, the largest face the detector finds, framed the way
SCUT-FBP5500 frames its faces (pipeline/core/face.py); a photo without a face is an ImageError('no face').

Ingest stores `load_uint8` outputs; training and evaluation read them back and call `to_tensor`; the
service calls both on an upload. So a photo gives the model the same tensor on every path (a test
checks it end to end).
"""
from __future__ import annotations

import dataclasses
import io
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:        # HEIC/HEIF: an opener Pillow does not have; registered once, for every caller of this path
    import pi_heif
    pi_heif.register_heif_opener()
except ImportError:    # pragma: no cover - requirements.lock has it; without it HEIC is "not an image"
    pass

from pipeline.core.face import Face, FaceConfig, crop_square, detect, detector_version, framing

# Normalisation maps [0, 255] to [-1, 1]; it is part of the model contract and is stored with it.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
MAX_SIDE = 20_000   # a side this long is an absurd photo whatever the pixel budget
DRAFT_FACTOR = 2   # JPEG draft decoding keeps >= 2x the model input (see decode_rgb)
# Decoders allowed. The multi-picture JPEGs (MPO) many phones write open through JPEG (first frame);
# HEIC/HEIF (iPhones, many Android phones) through pi-heif (libheif + libde265, decoder only), AVIF
# through Pillow's own plugin. They decode every pixel (no draft), so they get the PNG/WebP budget.
FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF")
ACCEPTED = "JPEG, PNG, WebP, HEIC/HEIF or AVIF"
# what an upload in another format is, told by its first bytes without running its parser
SIGNATURES = ((b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"%PDF", "PDF"),
              (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"), (b"\xff\x0a", "JPEG XL"),
              (b"\x00\x00\x00\x0cJXL ", "JPEG XL"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"<svg", "SVG"),
              (b"<?xml", "SVG/XML"), (b"qoif", "QOI"), (b"\x76\x2f\x31\x01", "OpenEXR"))
# A progressive JPEG is decoded once per scan, over the whole image, and libjpeg-turbo (as Pillow calls
# it) sets no limit on scans: a 150 KB file declaring 36 MP with 100 near-empty scans took 2.9 s, 1000
# scans on 4 MP 2.7 s (bench/hostile.py `progressive_bomb`; ~0.75 ns per scan-pixel on these cores).
# Cameras write 1 scan (baseline) and encoders' progressive scripts 6-12 (Pillow 6, jpegtran 10).
MAX_JPEG_SCANS = 64
MAX_SCAN_PIXELS = 500_000_000   # scans x pixels: 12 scans of a 40 MP photo, 64 of 7.8 MP (~0.4-0.8 s)
# Pillow walks a JPEG's markers before the first scan, and a PNG's chunks, one Python iteration each:
# 9 MB of empty markers, fill bytes or empty chunks took 1.3-3 s. Real files: the bytes before the
# first scan are EXIF/ICC/XMP segments (<= 64 KB each, ~1 MB at most in practice) with few FF bytes
# outside them; a PNG has tens to a few thousand chunks (IDAT chunks of 8-64 KB).
MAX_JPEG_HEAD_BYTES = 4 * 2**20
MAX_JPEG_HEAD_FF = 65_536
MAX_PNG_CHUNKS = 20_000
# PNG and WebP have no reduced-scale decode (JPEG's draft): every pixel is decoded, at 25-100 ns each
# here (a 24 MP WebP took 0.9 s, a 36 MP PNG 0.9 s, a 16383 x 976 WebP 0.8 s in the service's
# decoder), so they get a smaller pixel budget than JPEG: a 12 MP phone camera's full frame (4032 x 3024
# = 12.19 MP, what iPhones write as HEIC). HEIC/AVIF decode no faster (libde265 / dav1d): the decoder's
# CPU budget (package.decode_cpu_s) still bounds each one.
MAX_FULL_DECODE_PIXELS = 12_600_000


class ImageError(ValueError):
    """A photo that cannot be used; `reason` is a short stable code for quarantine tables and 4xx."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def open_image(src: bytes | str | Path | BinaryIO, max_pixels: int) -> Image.Image:
    """Reads a photo's header only (cheap: no pixels decoded) and checks it against the limits.

    Only the formats in FORMATS are opened: each decoder is attack surface, and these cover what
    cameras, phones and browsers send. Returns a lazy image for `decode_rgb`.

    Raises:
        ImageError: 'empty file', 'not an image' (includes formats outside FORMATS),
            'decompression bomb', 'absurd dimensions', 'corrupt image', 'too many scans' (JPEG scans x
            pixels over budget), 'too many markers', 'too many chunks' (see check_structure), 'too many pixels
            for its format' (PNG, WebP over MAX_FULL_DECODE_PIXELS).
    """
    data = src if isinstance(src, bytes) else Path(src).read_bytes() if isinstance(src, (str, Path)) else src.read()
    if not data:
        raise ImageError("empty file")
    check_structure(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as e:
        other = sniff(data)
        if other:
            raise ImageError(f"unsupported format {other} (send {ACCEPTED})") from e
        raise ImageError("not an image", f"expected one of {', '.join(FORMATS)}") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("decompression bomb") from e
    except Exception as e:  # noqa: BLE001 - any header parser failure is a bad file, never a 500
        raise _decoder_error(e) from e
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError("decompression bomb", f"{w}x{h} pixels > {max_pixels}")
    if w < 1 or h < 1 or max(w, h) > MAX_SIDE:
        raise ImageError("absurd dimensions", f"{w}x{h}")
    if img.format not in ("JPEG", "MPO") and w * h > MAX_FULL_DECODE_PIXELS:
        raise ImageError("too many pixels for its format", f"{img.format} {w}x{h}: at most "
                         f"{MAX_FULL_DECODE_PIXELS} pixels (decoded at full size; a JPEG may have more)")
    if img.format in ("JPEG", "MPO"):
        # inside entropy-coded data an FF byte is always followed by 00 (stuffing) or a marker, so
        # every FF DA is a scan (an EXIF thumbnail's count too: a slight overestimate)
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS or scans * w * h > MAX_SCAN_PIXELS:
            raise ImageError("too many scans", f"{scans} JPEG scans over {w}x{h} pixels: at most {MAX_JPEG_SCANS}, "
                             f"and scans x pixels <= {MAX_SCAN_PIXELS:.1e}")
    return img


def sniff(data: bytes) -> str | None:
    """The name of a known image (or video) format that is not accepted, from its first bytes; None
    when the bytes match none of them."""
    head = data[:32].lstrip() if data[:1] in (b" ", b"\n", b"\r", b"\t") else data[:32]
    for magic, name in SIGNATURES:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":          # ISO media: HEIF and AVIF were tried; anything else is a video
        return f"ISO media ({head[8:12].decode('latin-1').strip() or 'no brand'}; a video?)"
    return None


def check_structure(data: bytes) -> None:
    """Refuses, at C speed or in a bounded loop, files that make Pillow's header parsers loop per
    marker or chunk (see MAX_JPEG_HEAD_BYTES). Raises ImageError('too many markers' | 'too many chunks')."""
    if data[:2] == b"\xff\xd8":
        first_scan = data.find(b"\xff\xda")
        head = data if first_scan < 0 else data[:first_scan]
        if len(head) > MAX_JPEG_HEAD_BYTES or head.count(b"\xff") > MAX_JPEG_HEAD_FF:
            raise ImageError("too many markers", f"{len(head)} bytes before the first JPEG scan")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        pos, chunks = 8, 0
        while pos + 8 <= len(data):
            chunks += 1
            if chunks > MAX_PNG_CHUNKS:
                raise ImageError("too many chunks", f"over {MAX_PNG_CHUNKS} PNG chunks")
            (length,) = struct.unpack_from(">I", data, pos)
            if data[pos + 4:pos + 8] == b"IEND":
                break
            pos += 12 + length


def decode_rgb(img: Image.Image, min_side: int = 0) -> Image.Image:
    """Decodes a lazy image from `open_image`: EXIF orientation applied, any mode -> RGB.

    min_side > 0 lets a JPEG decode at 1/2, 1/4 or 1/8 scale in the DCT (`draft`), as long as the
    shorter side stays >= min_side: a 12 MP phone photo then costs ~1/64 of the decode time and
    memory. Callers pass 2x the model input, so the final resize still works from >= 2x the pixels.

    Raises:
        ImageError: 'truncated image' or 'corrupt image' (any decoder exception: a bad file, never a 500).
    """
    try:
        w, h = img.size
        if min_side > 0 and min(w, h) >= 2 * min_side:
            r = min_side / min(w, h)
            img.draft(img.mode, (max(1, math.ceil(w * r)), max(1, math.ceil(h * r))))
        img.load()
        return _to_rgb(ImageOps.exif_transpose(img))
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error, ...
        raise _decoder_error(e) from e


def _decoder_error(e: Exception) -> ImageError:
    truncated = "truncated" in str(e).lower() or isinstance(e, EOFError)
    return ImageError("truncated image" if truncated else "corrupt image", type(e).__name__)


def open_rgb(src: bytes | str | Path | BinaryIO, max_pixels: int, min_side: int = 0) -> Image.Image:
    """`open_image` + `decode_rgb`: a photo -> RGB image. Raises ImageError."""
    return decode_rgb(open_image(src, max_pixels), min_side)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode -> RGB; transparent pixels become white rather than whatever colour they hide."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 256).clip(0, 255).astype(np.uint8))
    return img.convert("RGB")


def fit_square(img: Image.Image, size: int) -> np.ndarray:
    """Centre-crops to a square (keeps the face's aspect) and resizes: -> (size, size, 3) uint8."""
    w, h = img.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    # reducing_gap: a fast box pre-reduction for big photos, visually identical to a plain bicubic
    out = img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    return np.asarray(out, dtype=np.uint8)


@dataclass(frozen=True)
class Framed:
    """A photo made model-ready, and where in the photo (its own pixels, EXIF orientation applied)
    the crop came from."""
    pixels: np.ndarray              # (size, size, 3) uint8
    box: list[int]                  # [x, y, w, h]: the face box (face crop) or the square (centre crop)
    face: Face | None               # the face scored (None: centre crop)
    faces: int                      # faces found (0 for a centre crop: nothing was searched)


def load_uint8(src: bytes | str | Path | BinaryIO, size: int, max_pixels: int,
               face: FaceConfig | None = None) -> np.ndarray:
    """Photo -> (size, size, 3) uint8: the stored, model-ready form. Raises ImageError."""
    return frame(open_image(src, max_pixels), size, face).pixels


def lazy_uint8(img: Image.Image, size: int, face: FaceConfig | None = None) -> np.ndarray:
    """`load_uint8` for a photo already opened with `open_image`."""
    return frame(img, size, face).pixels


def frame(img: Image.Image, size: int, face: FaceConfig | None = None) -> Framed:
    """A photo opened with `open_image` -> decoded, cropped (centre, or the face when `face` is
    given) and resized. The service opens uploads on the event loop to check them and calls this in
    a worker thread; ingest calls it through `load_uint8`. Raises ImageError ('no face', ...).

    JPEG draft decoding keeps 2x the model input in a centre crop, and 1x in the crop of the smallest
    face searched for (min_face * margin of the shorter side; a larger face keeps more): a 1 MP photo
    then decodes at 1/2 scale for an 80 px model (docs/face-step.md: speed)."""
    w0, h0 = img.size
    min_side = DRAFT_FACTOR * size if face is None else math.ceil(size / (face.min_face * face.margin))
    rgb = decode_rgb(img, min_side=min_side)
    if face is None:
        return Framed(fit_square(rgb, size), _centre_box(rgb.size, w0, h0), None, 0)
    found = detect(rgb, face)
    if not found:
        raise ImageError("no face", f"no face covering >= {face.min_face:.0%} of the shorter side")
    scale = _scale_to_photo(rgb.size, w0, h0)
    best = found[0]
    box = [round(v * scale) for v in (best.x, best.y, best.w, best.h)]
    return Framed(crop_square(rgb, framing(rgb, best, face), size), box, best, len(found))


def _scale_to_photo(decoded: tuple[int, int], w0: int, h0: int) -> float:
    """Decoded pixels -> the uploaded photo's pixels (a JPEG draft decodes at 1/2, 1/4 or 1/8;
    EXIF orientation may have swapped the sides)."""
    return max(w0, h0) / max(decoded)


def _centre_box(decoded: tuple[int, int], w0: int, h0: int) -> list[int]:
    w, h = decoded
    side = min(w, h)
    k = _scale_to_photo(decoded, w0, h0)
    return [round((w - side) // 2 * k), round((h - side) // 2 * k), round(side * k), round(side * k)]


def to_tensor(images: np.ndarray):
    """(N, S, S, 3) or (S, S, 3) uint8 -> (N, 3, S, S) float32 tensor normalised with MEAN/STD."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(0)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)          # (N, 3, S, S) in [0, 1]
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def crop_contract(crop: str, face: FaceConfig | None = None) -> dict:
    """How photos were cropped for a model; travels in its bundle and BentoML metadata, so the
    service crops uploads the same way (`crop_from_contract`). Only basic types: BentoML metadata
    holds no None."""
    if crop == "centre":
        return {"crop": "centre"}
    if face is None:
        raise ValueError("crop: face needs the face step's settings (ingest.face)")
    return {"crop": "face", "face": dataclasses.asdict(face), "detector": detector_version(face)}


def crop_from_contract(contract: dict) -> FaceConfig | None:
    """The stored contract -> the FaceConfig to crop with (None: centre). Raises ValueError when the
    model was trained with another detector version than this machine has."""
    if contract["crop"] == "centre":
        return None
    face = FaceConfig(**contract["face"])
    if detector_version(face) != contract["detector"]:
        raise ValueError(f"the model was trained on crops from {contract['detector']}; this machine has "
                         f"{detector_version(face)} (install requirements.lock)")
    return face
