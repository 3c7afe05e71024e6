"""The one image preprocessing path, shared by ingest, training, evaluation and the service.

    photo bytes --load_uint8--> (S, S, 3) uint8 --to_tensor--> (N, 3, S, S) float32, normalised

Ingest stores `load_uint8` outputs; training and evaluation read them back and call `to_tensor`; the
service calls both on an upload. So a photo gives the model the same tensor on every path (a test
checks it end to end).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Normalisation maps [0, 255] to [-1, 1]; it is part of the model contract and is stored with it.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
MAX_SIDE = 20_000   # a side this long is an absurd photo whatever the pixel budget


class ImageError(ValueError):
    """A photo that cannot be used; `reason` is a short stable code for quarantine tables and 4xx."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def open_rgb(src: bytes | str | Path | BinaryIO, max_pixels: int) -> Image.Image:
    """Decodes a photo fully, applies its EXIF orientation and converts any mode to RGB.

    Args:
        src: encoded bytes, a path or a binary file object.
        max_pixels: photos with more pixels are refused before decoding (decompression bombs).

    Raises:
        ImageError: reason is one of 'empty file', 'not an image', 'decompression bomb',
            'absurd dimensions', 'truncated image', 'corrupt image'.
    """
    if isinstance(src, bytes):
        if not src:
            raise ImageError("empty file")
        src = io.BytesIO(src)
    elif isinstance(src, (str, Path)) and Path(src).stat().st_size == 0:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(src)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError("decompression bomb", f"{w}x{h} pixels > {max_pixels}")
            if w < 1 or h < 1 or max(w, h) > MAX_SIDE:
                raise ImageError("absurd dimensions", f"{w}x{h}")
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError("not an image") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("decompression bomb") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = "truncated image" if "truncated" in str(e).lower() or isinstance(e, EOFError) else "corrupt image"
        raise ImageError(reason, type(e).__name__) from e


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


def load_uint8(src: bytes | str | Path | BinaryIO, size: int, max_pixels: int) -> np.ndarray:
    """Photo -> (size, size, 3) uint8: the stored, model-ready form. Raises ImageError."""
    return fit_square(open_rgb(src, max_pixels), size)


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
