"""What the service takes from the stored models: verified weights, the model contract and the HTTP bounds.

`pipeline/stages/package.py` records in each BentoML model's metadata the sha256 of its `model.pt`, the
model contract (image size, flip averaging, crop and face detector, execution policy: `Contract`) and,
apart from it, the HTTP bounds from params.yaml's `package` section (`Bounds`). `check_models` verifies
both models before the service starts and returns both; `guard_routes` turns the bounds into the
per-route limits of service/guard.py.
"""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.atomic import sha256_file
from pipeline.core.execution import Execution
from pipeline.core.face import FaceConfig
from pipeline.core.preprocess import MEAN, STD, crop_from_contract
from service.requests import Route

MODEL_BATCH = 64          # most photos in one model call (batcher, /infer adaptive batching)
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers on top of the photo bytes


@dataclass(frozen=True)
class Contract:
    """How the models were trained to see a photo; the service feeds them the same (or refuses to start)."""
    image_size: int
    tta_flip: bool
    face: FaceConfig | None        # crop the face found with these settings; None: centre crop
    execution: Execution           # precision and memory format evaluate scored the models with


@dataclass(frozen=True)
class Bounds:
    """What one request may cost: the HTTP bounds of params.yaml's `package` section, stored with the
    models so that a served model always comes with the bounds it was measured under."""
    max_upload_mb: float
    max_request_mb: float
    max_pixels: int
    max_request_pixels: int
    max_batch_files: int
    max_inflight: int
    retry_after_s: int
    read_timeout_s: float
    decode_threads: int
    decode_cpu_s: float
    request_decode_cpu_s: float
    max_reading: int
    max_buffered_mb: float
    header_timeout_s: float
    max_header_kb: int
    keep_alive_s: float
    max_connections: int
    max_batch: int = MODEL_BATCH

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 2**20)

    def max_infer_bytes(self, image_size: int) -> int:
        """/infer: `max_batch_files` base64 pixel arrays plus JSON punctuation."""
        one = len(base64.b64encode(bytes(image_size ** 2 * 3))) + 8
        return self.max_batch_files * one + 1024


@dataclass(frozen=True)
class Served:
    """Both stored models, checked: the contract they share and the bounds they were packaged with."""
    contract: Contract
    bounds: Bounds


class ModelError(SystemExit):
    """A model that must not be served; raised at import, so `bentoml serve` exits with this
    message before starting any worker (a worker failing in __init__ would be restarted forever)."""


def _verified(ref) -> dict:
    """One BentoML model reference -> its metadata, after checking its weights file's sha256."""
    from bentoml.exceptions import BentoMLException

    try:
        model = getattr(ref, "stored", ref)           # a BentoModel reference -> the stored model (None: absent)
        if model is None:
            raise BentoMLException("not found")
        tag, path, meta = str(model.tag), Path(model.path_of("model.pt")), dict(model.info.metadata)
    except BentoMLException as e:
        raise ModelError(f"faces: model {getattr(ref, 'tag', ref)} is not in the BentoML store: {e} "
                         "(run `make repro`, or set FACES_GENDER_MODEL / FACES_RATING_MODEL)") from None
    expected = meta.get("sha256")
    fix = "re-run `python -m pipeline.stages.package --out models/serving.json` (or `make repro`)"
    if expected is None or "serving" not in meta:
        raise ModelError(f"faces: model {tag} ({path}) was packaged without a weights hash or serving "
                         f"bounds; {fix}")
    if not path.is_file():
        raise ModelError(f"faces: model {tag}: weights file {path} is missing (expected sha256 {expected}); {fix}")
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(f"faces: model {tag}: weights file {path} is corrupt: sha256 {actual}, expected "
                         f"{expected} ({path.stat().st_size} bytes); {fix}")
    # the service normalises with the pipeline's constants: a model stored with others would be fed
    # inputs it never saw (older models stored none)
    for key, ours in (("mean", MEAN), ("std", STD)):
        if key in meta and [float(v) for v in meta[key]] != [float(v) for v in ours]:
            raise ModelError(f"faces: model {tag} was trained with {key} {meta[key]}, this service normalises "
                             f"with {list(ours)}; serve it with the code it was trained with")
    return meta


def check_models(refs: dict) -> Served:
    """{task: BentoModel} -> the contract and bounds both models agree on. Raises ModelError."""
    metas = {task: _verified(ref) for task, ref in refs.items()}
    facts = {task: (m["image_size"], bool(m.get("tta_flip", False)), m["serving"], m.get("preprocess"),
                    Execution.from_bundle(m.get("execution"))) for task, m in metas.items()}
    if len(set(map(repr, facts.values()))) != 1:
        raise ModelError("faces: the models disagree on input size, flip averaging, crop, serving bounds or "
                         f"execution policy: {facts}")
    size, tta, serving, contract, execution = next(iter(facts.values()))
    fields = {f.name for f in dataclasses.fields(Bounds)} - {"max_batch"}
    if set(serving) != fields or contract is None:
        raise ModelError(f"faces: serving bounds {sorted(serving)} do not match this service's {sorted(fields)}, "
                         "or the crop is not recorded; re-run the package stage")
    try:
        face = crop_from_contract(contract)
    except (TypeError, ValueError) as e:
        raise ModelError(f"faces: cannot crop the way these models were trained: {e}") from None
    return Served(Contract(image_size=size, tta_flip=tta, face=face, execution=execution), Bounds(**serving))


def guard_routes(bounds: Bounds, image_size: int) -> dict[str, Route]:
    """The guard's per-route limits (/infer's body size follows from the models' input size)."""
    one_photo = min(bounds.max_request_bytes, bounds.max_upload_bytes + MULTIPART_SLACK)
    return {
        "/predict": Route(b"multipart/form-data", b"image", 1, one_photo, bounds.max_upload_bytes),
        "/predict_batch": Route(b"multipart/form-data", b"images", bounds.max_batch_files,
                                bounds.max_request_bytes, bounds.max_upload_bytes),
        "/infer": Route(b"application/json", None, 0, bounds.max_infer_bytes(image_size)),
    }
