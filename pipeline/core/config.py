"""params.yaml -> frozen dataclasses: the one place where parameters are typed and checked.

Every default lives in params.yaml (not here): each field below is required, so a missing key, an
unknown key or a wrong type fails loudly at load time instead of deep inside a stage.

    from pipeline.core.config import load_params
    p = load_params()            # params.yaml in the working directory (DVC runs stages at the root)
    p.ingest.image_size          # -> 128

Profiles (partial params.yaml files run as DVC experiments) are pipeline/cli/profile.py's job.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.core.face import FaceConfig
from pipeline.core.sources import SourceConfig


@dataclass(frozen=True)
class TrackingConfig:
    uri: str          # MLflow backend store, e.g. sqlite:///mlflow.db
    experiment: str   # MLflow experiment name


@dataclass(frozen=True)
class SynthConfig:
    count: int        # number of faces to draw
    size: int         # side of the square JPEGs written (ingest resizes them)
    seed: int
    noise: float      # sd of the Gaussian noise added to the rating


@dataclass(frozen=True)
class IngestConfig:
    dataset: str                   # the run's data, by name: MLflow datasets, registered models
    sources: tuple[SourceConfig, ...]  # one ingest stage each; pipeline/core/sources.py
    image_size: int                # side of the square uint8 images stored
    workers: int                   # decode processes; 0 = all cores
    max_pixels: int                # larger photos are quarantined as decompression bombs
    max_quarantine_fraction: float # the stage fails above this fraction
    crop: Literal["centre", "face"]  # how a photo becomes a square (stored with the model)
    face: FaceConfig               # the face step (crop: face); pipeline/core/face.py


@dataclass(frozen=True)
class ValidateConfig:
    female_fraction: tuple[float, float]   # class balance bounds (min, max)


@dataclass(frozen=True)
class SplitConfig:
    method: Literal["stratified", "official"]
    official_dir: str | None       # folder with train.txt / test.txt (method=official)
    val: float                     # fraction of all rows (of the train part for official)
    test: float                    # fraction of all rows (ignored for official)
    seed: int


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool
    shift: float                   # max translation, fraction of the side
    brightness: float              # max additive change in [0, 1] pixel units
    contrast: float                # max relative contrast change


@dataclass(frozen=True)
class TaskConfig:
    """How one task's model is built and trained (params.yaml: train.gender, train.rating)."""
    arch: str                      # course | convnet | resnet (pipeline/core/model.py)
    widths: tuple[int, ...]
    dropout: float
    aux_tasks: tuple[str, ...]     # extra heads on the same trunk (multi-task): gender/rating/group
    aux_weight: float              # weight of each auxiliary loss
    loss: Literal["cross_entropy", "l1", "huber", "mse"]
    epochs: int
    batch_size: int
    lr: float                      # peak learning rate (one-cycle) / start (cosine)
    weight_decay: float
    schedule: Literal["onecycle", "cosine"]
    patience: int                  # early stopping: epochs without a better validation metric (select: best)
    select: Literal["best", "last"]  # weights kept: the epoch best on validation, or the last (a fixed recipe)
    ema: float                     # decay of a moving average of the weights, validated and kept; 0 = off
    val_every: int                 # validate every k-th epoch and the last (k > 1 with select: last only)
    small_size: int                # progressive resizing: the first small_epochs see batches shrunk to this side (0: off)
    small_epochs: int              # (the last epoch is always at full size)
    seed: int
    augment: AugmentConfig


@dataclass(frozen=True)
class TrainConfig:
    device: Literal["auto", "cpu", "cuda"]
    threads: int                   # CPU threads; 0 = all cores
    nproc: int                     # > 1: data-parallel under torchrun, this many processes (pipeline/core/distributed.py)
    precision: Literal["auto", "fp32", "bf16"]   # auto: bf16 autocast where native (pipeline/core/execution.py)
    channels_last: bool            # NHWC memory format for the convolutions
    gender: TaskConfig
    rating: TaskConfig


@dataclass(frozen=True)
class RefitConfig:
    """The served model: the train stage's recipe retrained on every photo (pipeline/stages/refit.py)."""
    enabled: bool                  # false: the split model itself is served
    budget: Literal["steps", "epochs"]   # steps: as many optimizer steps as the split run; epochs: as many epochs
    start: Literal["scratch", "split"]   # scratch: new weights (the recipe's seed); split: the split model's
    fraction: float                # of that budget (from `split`: a short fine-tune is enough)
    lr_scale: float                # peak learning rate / the recipe's (from `split`: the weights are trained)


@dataclass(frozen=True)
class EvaluateConfig:
    tta_flip: bool                 # average the predictions for the photo and its mirror image
    batch_size: int
    promote: bool                  # move the registry alias `champion` when the new model is better


@dataclass(frozen=True)
class ParamReportConfig:
    reference_outputs: int         # the course network is also reported with this many outputs
    reference_size: int            # ... at this input side


@dataclass(frozen=True)
class PackageConfig:
    """Model names and the serving bounds, stored with the models (the service reads them there)."""
    bento_prefix: str              # BentoML model names: <prefix>-gender, <prefix>-rating
    max_upload_mb: float           # one photo's file
    max_request_mb: float          # one request's body, checked from Content-Length before reading
    max_pixels: int                # one photo (decompression bombs)
    max_request_pixels: int        # all photos of one request
    max_batch_files: int           # photos per /predict_batch request (and pixels per /infer call)
    max_inflight: int              # admitted requests per worker process; the next gets 503
    retry_after_s: int             # the Retry-After of that 503
    read_timeout_s: float          # a request body must arrive within this (408)
    decode_threads: int            # decode processes per worker (header, decode, face step, resize)
    decode_cpu_s: float            # CPU one photo's decode may take; its decoder is killed past it (400)
    request_decode_cpu_s: float    # ... all photos of one request together
    max_reading: int               # request bodies being received at once per worker (more: 503)
    max_buffered_mb: float         # their bytes together per worker (more: 503)
    header_timeout_s: float        # request line + headers must arrive within this (408, closed)
    max_header_kb: int             # ... and fit in this (431, closed)
    keep_alive_s: float            # an idle keep-alive connection is closed after this
    max_connections: int           # open connections per worker; more are closed at once


@dataclass(frozen=True)
class Params:
    tracking: TrackingConfig
    synth: SynthConfig
    ingest: IngestConfig
    validate: ValidateConfig
    split: SplitConfig
    train: TrainConfig
    refit: RefitConfig
    evaluate: EvaluateConfig
    param_report: ParamReportConfig
    package: PackageConfig


class ParamsError(ValueError):
    """params.yaml does not match the dataclasses above."""


def _build(tp: Any, value: Any, where: str) -> Any:
    """Converts a YAML value to type `tp`, recursing into dataclasses; raises ParamsError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        unknown = set(value) - set(hints)
        missing = set(hints) - set(value)
        if unknown or missing:
            raise ParamsError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        return typing.cast(Any, tp)(**{k: _build(t, value[k], f"{where}.{k}") for k, t in hints.items()})
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value, where)
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{where}: {value!r} is not one of {args}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        return tuple(_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ParamsError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_build(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(args, value, strict=True)))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ParamsError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def load_params(path: str | Path = "params.yaml") -> Params:
    """Reads params.yaml into a frozen `Params`; unknown, missing or mistyped keys raise ParamsError."""
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    return check(_build(Params, raw, "params"))


def check(p: Params) -> Params:
    """What the types cannot say: source names unique and usable as folder names, scales ordered."""
    names = [s.name for s in p.ingest.sources]
    if not names or len(set(names)) != len(names):
        raise ParamsError(f"ingest.sources: need at least one source and unique names, got {names}")
    for s in p.ingest.sources:
        if not s.name.replace("-", "").replace("_", "").isalnum() or not s.name.isascii():
            raise ParamsError(f"ingest.sources: name {s.name!r}: letters, digits, - and _ only")
        if not s.scale[0] < s.scale[1]:
            raise ParamsError(f"ingest.sources.{s.name}.scale: expected [low, high], got {list(s.scale)}")
    for task in ("gender", "rating"):
        t = getattr(p.train, task)
        if t.val_every < 1 or (t.val_every > 1 and t.select != "last"):
            raise ParamsError(f"train.{task}.val_every: 1, or more with select: last (select: best validates every "
                              f"epoch), got {t.val_every}")
        _check_small(t, task, p.ingest.image_size)
    if not 0 < p.refit.fraction <= 1 or not 0 < p.refit.lr_scale <= 1:
        raise ParamsError(f"refit: fraction and lr_scale must be in (0, 1], got {p.refit.fraction}, {p.refit.lr_scale}")
    return p


def _check_small(t: TaskConfig, task: str, image_size: int) -> None:
    """Progressive resizing shrinks to a side that still leaves every pooling stage a pixel (8 px) and
    is below the served size (fit keeps the last epoch at full size whatever small_epochs says, so a
    short run such as `-S train.rating.epochs=1` needs no other change)."""
    if t.small_epochs < 0 or (t.small_size and not 8 <= t.small_size < image_size):
        raise ParamsError(f"train.{task}.small_size / small_epochs: a side from 8 to below ingest.image_size "
                          f"({image_size}) for 0 or more epochs, or small_size 0 (off), got "
                          f"{t.small_size} / {t.small_epochs}")


def merge(base: dict, over: dict, where: str = "params") -> dict:
    """`base` with `over`'s leaves replacing its own; a key `base` does not have raises ParamsError."""
    out = dict(base)
    for k, v in over.items():
        if k not in base:
            raise ParamsError(f"{where}: unknown key {k!r}")
        out[k] = merge(base[k], v, f"{where}.{k}") if isinstance(v, dict) and isinstance(base[k], dict) else v
    return out


def as_flat_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flattens a (nested) params dataclass to {'section.key': value} for logging."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            out.update(as_flat_dict(v, key + "."))
        else:
            out[key] = v
    return out
