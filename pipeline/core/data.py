"""In-memory training data: the ingested uint8 array, split lists and labels, plus tensor augmentation.

Photos are decoded once by ingest; every epoch slices the uint8 array (no JPEG decoding) and turns
the batch into model input with the shared `preprocess.to_tensor`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core import scales
from pipeline.core.preprocess import to_tensor
from pipeline.core.tasks import TASKS


@dataclass
class Part:
    """One split part: images (N, S, S, 3) uint8 and per-task targets."""
    images: np.ndarray
    meta: pd.DataFrame

    def targets(self, task: str) -> torch.Tensor:
        """A two-class task: 1 for its positive class (gender: m), else 0; a many-class task (group):
        the class's index (long); a regression (rating): the label (float, on the served scale:
        train maps every source's ratings to it, pipeline/core/scales.py). From pipeline/core/tasks.py."""
        t = TASKS[task]
        if t.positive is not None:
            return torch.tensor((self.meta[t.column] == t.positive).to_numpy(), dtype=torch.long)
        if t.classes is not None:
            codes = self.meta[t.column].map({c: i for i, c in enumerate(t.classes)})
            return torch.tensor(codes.to_numpy(dtype="int64"), dtype=torch.long)
        return torch.tensor(self.meta[t.column].to_numpy(), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.meta)


PARTS = ("train", "val", "test")           # the split stage's file lists, <part>.txt


def read_names(path: Path) -> list[str]:
    """A split file list: one row key per line (keys may hold spaces, MEBeauty's file names do; ingest
    quarantines names with line breaks)."""
    return [n for n in Path(path).read_text(encoding="utf-8").split("\n") if n]


def load_parts(ingested: Path, split_dir: Path, parts=PARTS) -> dict[str, Part]:
    """Reads images.npy once and slices it by the split's file lists (copies: the parts are small)."""
    meta = pd.read_parquet(ingested / "meta.parquet")
    images = np.load(ingested / "images.npy", mmap_mode="r")
    row = {n: i for i, n in enumerate(meta["filename"])}
    out = {}
    for part in parts:
        names = read_names(split_dir / f"{part}.txt")
        idx = np.sort(np.array([row[n] for n in names], dtype=np.int64))   # file order: sequential memmap reads
        out[part] = Part(np.ascontiguousarray(images[idx]), meta.iloc[idx].reset_index(drop=True))
    return out


def on_served_scale(parts: dict[str, Part], maps: dict[str, scales.Map]) -> dict[str, Part]:
    """Every part with `rating` on the served scale (pipeline/core/scales.py); the label as written stays in
    `rating_own`. Rows without a `source` (one unnamed source) are on the served scale already."""
    if "source" not in next(iter(parts.values())).meta:
        return parts
    return {k: Part(p.images, scales.to_served(p.meta, maps)) for k, p in parts.items()}


def merge_parts(parts: list[Part]) -> Part:
    """One part made of several (a refit trains on train + val + test), rows in the given order."""
    return Part(np.concatenate([p.images for p in parts]),
                pd.concat([p.meta for p in parts], ignore_index=True))


@dataclass(frozen=True)
class Augment:
    flip: bool          # horizontal flip with p = 0.5 (faces are roughly symmetric)
    shift: float        # max translation as a fraction of the side (reflect padding)
    brightness: float   # max additive change, in [0, 1] pixel units
    contrast: float     # max relative change around each image's mean


def augment(x: torch.Tensor, cfg: Augment, gen: torch.Generator, draw: tuple[int, slice] | None = None
            ) -> torch.Tensor:
    """Random flip / shift / brightness / contrast on a normalised batch (B, 3, S, S).

    Works after normalisation: brightness and contrast are affine, so they commute with it (the
    brightness step is scaled by 1/std). `draw = (n, positions)`: x holds rows `positions` of a batch
    of n; the random numbers are drawn for all n and these rows take theirs, so a data-parallel rank
    augments its slice exactly as one process augments the whole batch (pipeline/core/distributed.py).
    """
    b, _, s, _ = x.shape
    n, pos = draw if draw is not None else (b, slice(None))   # positions: a slice of the n rows
    if cfg.flip:
        flip = (torch.rand(n, generator=gen) < 0.5)[pos]
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    if cfg.shift > 0:
        pad = max(1, int(round(cfg.shift * s)))
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
        dx, dy = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)[:, pos]
        x = shift_crop(padded, dx, dy, s)
    if cfg.contrast > 0:
        c = 1 + (torch.rand(n, 1, 1, 1, generator=gen)[pos] * 2 - 1) * cfg.contrast
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
    if cfg.brightness > 0:
        x = x + (torch.rand(n, 1, 1, 1, generator=gen)[pos] * 2 - 1) * cfg.brightness / 0.5   # std = 0.5
    return x


def shrink(x: torch.Tensor, size: int) -> torch.Tensor:
    """A model-input batch (B, 3, S, S) -> (B, 3, size, size), antialiased like ingest's resize: the
    early epochs of progressive resizing (train.<task>.small_size) see the same faces in fewer pixels,
    at (size / S)^2 of the multiply-accumulates per step. size 0 or S: x itself.

    Raises:
        ValueError: size > S (that would train on upscaled photos; params.yaml refuses it).
    """
    if size in (0, x.shape[-1]):
        return x
    if size > x.shape[-1]:
        raise ValueError(f"shrink: {size} px is larger than the batch's {x.shape[-1]} px")
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def shift_crop(padded: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, s: int) -> torch.Tensor:
    """Crops image i of a padded batch (B, C, P, P) at offset (dx[i], dy[i]) -> (B, C, s, s), as one
    `gather` over the flattened pixels instead of a Python slice per image (0.65 vs 1.27 ms for 64
    faces of 80 px; advanced indexing was slower than either, 2.7 ms)."""
    b, c, p, _ = padded.shape
    side = torch.arange(s)
    flat = (dy[:, None, None] + side[None, :, None]) * p + dx[:, None, None] + side[None, None, :]   # (B, s, s)
    return padded.reshape(b, c, p * p).gather(2, flat.view(b, 1, s * s).expand(b, c, s * s)).view(b, c, s, s)


def batches(part: Part, batch_size: int, gen: torch.Generator | None = None):
    """Yields (index tensor, normalised images) over `part`, shuffled when a generator is given."""
    for idx in batch_indices(len(part), batch_size, gen):
        yield idx, to_tensor(part.images[idx.numpy()])


def batch_indices(n: int, batch_size: int, gen: torch.Generator | None = None):
    """Yields the row indices of each batch of n rows, shuffled when a generator is given."""
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]
