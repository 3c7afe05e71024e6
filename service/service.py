"""BentoML service: gender and attractiveness rating for a face photo, from the champion models.

    make serve      # = bentoml serve service.service:Faces --host 127.0.0.1 --port 3000
    curl -F image=@service/example.jpg 127.0.0.1:3000/predict

Models come from the BentoML store (`pipeline/stages/package.py` puts the MLflow champions there); the tags
default to the latest `faces-gender` / `faces-rating` and can be pinned with FACES_GENDER_MODEL /
FACES_RATING_MODEL. Their weights are checked against the sha256 recorded by `package` before
anything starts, and their metadata carries the preprocessing contract and the serving bounds
(service/limits.py). A photo request passes service/guard.py (admission, headers, multipart
structure, the files' bytes), then service/direct.py hands the checked files to `_score`: killable
decoder processes (service/decoder.py) open each one's header (format allow-list, pixel limits),
decode it, find the face and crop it with the pipeline's own `frame` (the crop the models were
trained on: centre, or the face step with the detector settings stored in the model; a photo
without a face is a 422), and concurrent photos share model batches (service/batcher.py). /infer
takes pixels and is BentoML-`batchable`.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import gc
import logging
import os
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from PIL import Image
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from starlette.datastructures import UploadFile

from pipeline.core.model import serving_model
from pipeline.core.preprocess import Framed, ImageError
from pipeline.core.tasks import SERVED
from service import direct, frontdoor
from service.answers import FaceBox, ModelVersions, NoFace, Prediction
from service.batcher import Batcher
from service.decoder import DecodePool, DecodeRefused, give_memory_back
from service.forward import Forward
from service.guard import EarlyShed, UploadGuard
from service.limits import check_models, guard_routes
from service.logs import ClientErrorFilter
from service.openapi import DocsAnswers
from service.pages import PAGES
from service.settings import CPUS, RESOURCES, THREADS, TIMEOUT_S, WORKERS

EXAMPLE_INPUT = Path(__file__).parent / "example.jpg"
GENDER_TAG = os.environ.get("FACES_GENDER_MODEL", "faces-gender:latest")
RATING_TAG = os.environ.get("FACES_RATING_MODEL", "faces-rating:latest")
# BentoML opens an OpenTelemetry span per request even when none is exported (its default sample rate
# is 0); on the 2-core machine that was 0.7 ms of each /predict (bench/serve.py, README). So the photo
# routes get spans only with FACES_TRACE=1, for when you configure BentoML's tracing exporter.
UNTRACED = [] if os.environ.get("FACES_TRACE") == "1" else ["/predict", "/infer"]   # regexes: /predict_batch too
REFS = {"gender": bentoml.models.BentoModel(GENDER_TAG), "rating": bentoml.models.BentoModel(RATING_TAG)}
# Read from the stored models (sha256-checked: a corrupt model stops `bentoml serve` here, with a
# message naming tag, path and hash, before any worker starts - no restart loop).
STORED = check_models(REFS)
CONTRACT, BOUNDS = STORED.contract, STORED.bounds
logging.getLogger("bentoml._internal.server.http_app").addFilter(ClientErrorFilter())


def checked_image(upload: UploadFile | bytes) -> Image.Image:
    """Upload -> its bytes, size-checked, carried in an empty placeholder image (BentoML passes a PIL
    image through untouched; it would open anything else itself, on the event loop). Nothing is
    parsed here: the header, the decode and the face step run in a killable decoder process
    (service/decoder.py). A ValueError is a 400 with the message (no paths).

    HTTP uploads arrive as UploadFile (guard.py lets only file parts through); in-process callers may
    pass bytes. Anything else - a path, a URL, a decoded image - is refused: no input may name a
    file or host, and a decoded image would skip the pipeline's decode (EXIF, modes, limits)."""
    if isinstance(upload, UploadFile):                   # its part headers were checked by guard.py
        data = upload.file.read(BOUNDS.max_upload_bytes + 1)
    elif isinstance(upload, bytes):
        data = upload
    else:
        raise ValueError("send the photo as a file upload (multipart/form-data; in process: bytes)")
    if len(data) > BOUNDS.max_upload_bytes:
        raise ValueError(f"file too large: over {BOUNDS.max_upload_bytes} bytes")
    if not data:
        raise ValueError("unusable image: empty file")
    holder = Image.Image()                  # no pixel buffer: 2 % of a worker's event loop under load
    holder.info["upload"] = data
    return holder


def checked_pixels(b64: str) -> str:
    """Raw /infer input, one photo as base64 of its S*S*3 uint8 pixels (row-major, RGB, already
    `fit_square`d), for clients that preprocess themselves. Validated per request, so a malformed one
    never joins (and breaks) an adaptive batch."""
    s = CONTRACT.image_size
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("pixels must be base64") from None
    if len(raw) != s * s * 3:
        raise ValueError(f"pixels must be {s}*{s}*3 = {s * s * 3} bytes, got {len(raw)}")
    return b64


def encode_pixels(a: np.ndarray) -> str:
    """(S, S, 3) uint8 -> the /infer wire format (for Python clients of /infer)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode()


def bad_photo(field: str, message: str) -> ValidationError:
    """A 400 shaped like BentoML's own validation errors ({"error", "detail": [{"msg"}]}), for
    problems found after validation (while decoding)."""
    return ValidationError.from_exception_data("Input", [
        {"type": "value_error", "loc": (field,), "input": None, "ctx": {"error": ValueError(message)}}])


Photo = Annotated[Image.Image, BeforeValidator(checked_image)]
Photos = Annotated[list[Photo], Field(min_length=1, max_length=BOUNDS.max_batch_files)]
Pixels = Annotated[str, AfterValidator(checked_pixels)]
# an empty list would reach BentoML's batch dispatcher, which fails on it with a 500 (schemathesis)
PixelBatch = Annotated[list[Pixels], Field(min_length=1, max_length=BOUNDS.max_batch_files)]


BATCH_SIZES = bentoml.metrics.Histogram(
    name="faces_predict_batch_size", documentation="photos per model call for /predict and /predict_batch",
    buckets=(1, 2, 4, 8, 16, 32, 64))
GUARD_EVENTS = bentoml.metrics.Counter(
    name="faces_guard_events", documentation="model-route requests refused (4xx), shed (503) or "
    "abandoned by their client (client_gone)", labelnames=["event"])
DECODER_KILLS = bentoml.metrics.Counter(
    name="faces_decoder_kills", documentation="decoder processes stopped and replaced: budget (a photo over "
    "its CPU budget), client_gone, wall (no answer in time), memory, died", labelnames=["reason"])
INFLIGHT = bentoml.metrics.Gauge(
    name="faces_inflight_requests", documentation="model-route requests admitted and not yet answered",
    multiprocess_mode="livesum")


def guard_metrics(event: str, value: int = 1) -> None:
    if event == "inflight":
        INFLIGHT.set(value)
    else:
        GUARD_EVENTS.labels(event=event).inc(value)


@bentoml.asgi_app(PAGES, path="/")
# The access log's request type/length fields are off: BentoML decodes those request headers as UTF-8
# when it logs the answer, so one non-UTF-8 byte in a Content-Type turned any answer into a dropped
# connection with an ERROR traceback (found by bench/hardening.py's fuzz).
@bentoml.service(resources=RESOURCES, traffic={"timeout": TIMEOUT_S}, workers=WORKERS,
                 tracing={"excluded_urls": UNTRACED},
                 logging={"access": {"request_content_type": False, "request_content_length": False}})
class Faces:
    gender_ref = REFS["gender"]
    rating_ref = REFS["rating"]

    def __init__(self) -> None:
        self.models, self.versions = {}, {}
        for task, ref in (("gender", self.gender_ref), ("rating", self.rating_ref)):
            # CUDA when present; precision and memory format as evaluate scored them (the stored
            # policy, resolved here); each worker gets its share of the cores
            self.models[task], self.policy = serving_model(ref.path_of("model.pt"), task, CONTRACT.execution,
                                                           workers=WORKERS, threads=THREADS)
            self.versions[f"{task}_version"] = ref.info.labels.get("mlflow_version", str(ref.tag.version))
        labels = [ref.info.labels for ref in (self.gender_ref, self.rating_ref)]
        self.versions["source"] = "/".join(sorted({lb.get("source", "unknown") for lb in labels}))
        self.versions["refit"] = all(lb.get("weights", "split").startswith("refit") for lb in labels)
        self.policy.apply()
        self.size, self.tta_flip, self.face = CONTRACT.image_size, CONTRACT.tta_flip, CONTRACT.face
        self.forward = Forward(self.models, SERVED, self.policy, self.tta_flip)    # service/forward.py
        self.batcher = Batcher(self.forward, BOUNDS.max_batch, on_batch=BATCH_SIZES.observe)
        # header, decode, face step and resize run in killable child processes, not on the event
        # loop; the face step's pyramid levels spread over the cores this replica has (a lone
        # photo's face step: 8 ms instead of 11, bench/serve.py); under load the pool bounds it anyway
        self.decoder = DecodePool(BOUNDS.decode_threads, {
            "size": self.size, "max_pixels": BOUNDS.max_pixels, "threads": CPUS,
            "face": dataclasses.asdict(self.face) if self.face is not None else None},
            wall_s=10 * BOUNDS.decode_cpu_s, on_kill=lambda reason: DECODER_KILLS.labels(reason=reason).inc())
        # HTTP photos, once the guard has checked them, are answered by service/direct.py
        direct.answer("/predict", self._score_one)
        direct.answer("/predict_batch", functools.partial(self._score, field="images"))
        # everything the worker holds by now (modules, BentoML, torch, the models: ~230k objects) out
        # of the cyclic GC's sight: a full collection under load then scans the requests' objects only,
        # ~2 ms instead of a 94-132 ms stall of the event loop (docs/speed.md)
        gc.freeze()

    # max_latency_ms = the traffic timeout: BentoML's dispatcher never sheds on its own (its 503 had a
    # generic body, no Retry-After and an ERROR traceback); admission is the guard's (max_inflight)
    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=BOUNDS.max_batch, max_latency_ms=TIMEOUT_S * 1000)
    def infer(self, pixels: PixelBatch) -> list[list[float]]:
        """Photos as base64 pixels (see checked_pixels) -> [P(male), rating] each; concurrent calls
        are merged into one model batch (adaptive batching)."""
        s = self.size
        return self.forward([np.frombuffer(base64.b64decode(p), np.uint8).reshape(s, s, 3) for p in pixels])

    def _result(self, framed: Framed, p_male: float, rating: float) -> Prediction:
        male = p_male >= 0.5
        f = framed.face
        face = FaceBox(crop="face" if f else "centre", box=framed.box, confidence=f.neighbors if f else None,
                       angle=f.angle if f else 0.0, faces_found=framed.faces)
        return Prediction(gender="male" if male else "female", gender_probability=p_male if male else 1 - p_male,
                          rating=rating, face=face, model=ModelVersions(**self.versions))

    async def _decode(self, photos: list[bytes], field: str) -> list[Framed]:
        """Uploaded files -> decoded, face found (when the models use face crops), cropped and resized
        in the decoder processes, one photo at a time, within the per-photo and per-request CPU budgets
        and the request's pixel budget. No face: 422; not a usable photo, or over a budget: 400."""
        out, cpu, pixels = [], 0.0, 0
        for i, data in enumerate(photos):
            which = "" if len(photos) == 1 else f"photo {i + 1} of {len(photos)}: "
            budget = min(BOUNDS.decode_cpu_s, BOUNDS.request_decode_cpu_s - cpu)
            try:
                got = await self.decoder.frame(data, budget)
            except DecodeRefused as e:
                if e.status == 503:
                    raise bentoml.exceptions.ServiceUnavailable(e.reason) from None
                raise bad_photo(field, f"{which}unusable image: {e.reason}") from None
            except ImageError as e:
                if e.reason == "no face" and self.face is not None:      # only a face crop finds no face
                    raise NoFace(f"{which}no face found (faces smaller than {self.face.min_face:.0%} of the "
                                 "photo's shorter side, or turned away from the camera, are not found)") from None
                raise bad_photo(field, f"{which}unusable image: {e.reason}") from None
            cpu, pixels = cpu + got.cpu_s, pixels + got.pixels
            if pixels > BOUNDS.max_request_pixels:
                raise bad_photo(field, f"over {BOUNDS.max_request_pixels} pixels in this request")
            out.append(got.framed)
        return out

    async def _score(self, photos: list[bytes], field: str) -> list[Prediction]:
        """Uploaded files -> one answer each, in order; the photos of one call share model batches."""
        framed = await self._decode(photos, field)
        out = await self.batcher.run([f.pixels for f in framed])
        return [self._result(f, *row) for f, row in zip(framed, out, strict=True)]

    async def _score_one(self, photos: list[bytes]) -> Prediction:
        (answer,) = await self._score(photos, "image")
        return answer

    # Over HTTP, service/direct.py answers both routes with `_score` (the same answers, without
    # BentoML's second parse of the body); these are the schema, and the API of in-process callers
    @bentoml.api
    async def predict(self, image: Photo) -> Prediction:
        """One photo (multipart file field `image`: JPEG, PNG or WebP) -> gender, its probability,
        rating, the face scored (box in the photo's pixels, detector confidence, faces found), model
        versions. 422 when no face is found; 400 for a file that is not a usable photo."""
        return await self._score_one([image.info["upload"]])

    @bentoml.api
    async def predict_batch(self, images: Photos) -> list[Prediction]:
        """Several photos (repeated multipart file field `images`) -> one result each, in order.
        422 naming the photo when one has no face."""
        return await self._score([im.info["upload"] for im in images], "images")


PHOTO_ANSWERS = ("408", "413", "422", "503")
# add_asgi_middleware is added to the class by @bentoml.service (mypy cannot see it)
Faces.add_asgi_middleware(DocsAnswers, routes={"/predict": PHOTO_ANSWERS,  # type: ignore[attr-defined]
                                               "/predict_batch": PHOTO_ANSWERS, "/infer": ("408", "413", "503")})

Faces.add_asgi_middleware(UploadGuard, routes=guard_routes(BOUNDS, CONTRACT.image_size),  # type: ignore[attr-defined]
                          max_inflight=BOUNDS.max_inflight, retry_after_s=BOUNDS.retry_after_s,
                          read_timeout_s=BOUNDS.read_timeout_s, max_reading=BOUNDS.max_reading,
                          max_buffered_mb=BOUNDS.max_buffered_mb, metrics=guard_metrics, idle=give_memory_back,
                          photos_only=True)                               # service/direct.py answers them
# innermost: the photos the guard checked are answered without BentoML's second parse
Faces.add_asgi_middleware(direct.Direct, server=f"BentoML Service/{Faces.name}")  # type: ignore[attr-defined]
# uvicorn's protocol with connection bounds; EarlyShed (outermost) sheds before BentoML's middlewares
frontdoor.install(frontdoor.Bounds(header_timeout_s=BOUNDS.header_timeout_s, max_header_bytes=BOUNDS.max_header_kb * 1024,
                                   body_timeout_s=TIMEOUT_S, keep_alive_s=BOUNDS.keep_alive_s,
                                   max_connections=BOUNDS.max_connections, retry_after_s=BOUNDS.retry_after_s),
                  wrap=EarlyShed)


def asgi():
    """The service as `bentoml serve` runs it, for in-process use (tests): Outer -> EarlyShed -> BentoML
    (-> its middlewares -> UploadGuard -> Direct -> the API)."""
    return frontdoor.outer(Faces.to_asgi())
