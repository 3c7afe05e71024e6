"""BentoML service: gender and attractiveness rating for a face photo, from the champion models.

    make serve      # = bentoml serve service.service:Faces --host 127.0.0.1 --port 3000
    curl -F image=@service/example.jpg 127.0.0.1:3000/predict

Models come from the BentoML store (`pipeline/package.py` puts the MLflow champions there); the tags
default to the latest `faces-gender` / `faces-rating` and can be pinned with FACES_GENDER_MODEL /
FACES_RATING_MODEL. Uploads go through the pipeline's own `open_rgb` + `fit_square`, and the model
call is `pipeline.model.predict`, as in the evaluate stage. A bad upload is a 400 with a message.
Concurrent /predict and /predict_batch photos share model batches (service/batcher.py); /infer takes
pixels and is BentoML-`batchable`.
"""
from __future__ import annotations

import base64
import binascii
import fnmatch
import os
from pathlib import Path
from typing import Annotated, Literal

import bentoml
import numpy as np
from bentoml.exceptions import BadInput
from PIL import Image
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.responses import HTMLResponse
from starlette.routing import Route

from pipeline.model import TaskModel, load_bundle
from pipeline.model import predict as model_predict
from pipeline.preprocess import ImageError, fit_square, open_rgb
from service.batcher import Batcher
from service.guard import UploadGuard

EXAMPLE_INPUT = Path(__file__).parent / "example.jpg"
GENDER_TAG = os.environ.get("FACES_GENDER_MODEL", "faces-gender:latest")
RATING_TAG = os.environ.get("FACES_RATING_MODEL", "faces-rating:latest")
MAX_BATCH = 64
WORKERS = 2                                             # processes, each with its own copy of the models
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)     # torch threads per worker: no oversubscription
# BentoML opens an OpenTelemetry span per request even when none is exported (its default sample rate
# is 0); on the 2-core machine that was 0.7 ms of each /predict (bench/serve.py, README). So the photo
# routes get spans only with FACES_TRACE=1, for when you configure BentoML's tracing exporter.
UNTRACED = [] if os.environ.get("FACES_TRACE") == "1" else ["/predict", "/infer"]   # regexes: /predict_batch too
# replaced by the models' metadata at start-up (validators run in the worker that loaded the models)
LIMITS = {"max_upload_bytes": 10 * 2**20, "max_pixels": 40_000_000, "image_size": 0}


def checked_image(upload: UploadFile | bytes | str | Path) -> Image.Image:
    """Upload -> RGB image, or ValueError (BentoML answers 400 with the message, no temp paths).

    Runs before BentoML's own PIL decoding (which turns a bad file into a 500) and decodes from the
    upload in memory: no temporary file per request. In-process callers may pass bytes or a path; a
    decoded PIL image is refused, since it would skip the pipeline's decode (EXIF, modes, limits)."""
    if isinstance(upload, UploadFile):
        ctype = upload.content_type or ""
        if not fnmatch.fnmatch(ctype, "image/*"):
            raise ValueError(f"Invalid content type {ctype}, expected image/*")
        data = upload.file.read()
    elif isinstance(upload, (bytes, str, Path)):
        data = upload if isinstance(upload, bytes) else Path(upload).read_bytes()
    else:
        raise ValueError("send the photo as a file upload (or, in process, as bytes or a path)")
    if len(data) > LIMITS["max_upload_bytes"]:
        raise ValueError(f"file too large: {len(data)} bytes > {LIMITS['max_upload_bytes']}")
    try:
        return open_rgb(data, LIMITS["max_pixels"])
    except ImageError as e:
        raise ValueError(f"unusable image: {e.reason}") from None


def checked_pixels(b64: str) -> str:
    """Raw /infer input, one photo as base64 of its S*S*3 uint8 pixels (row-major, RGB, already
    `fit_square`d), for clients that preprocess themselves. Validated per request, so a malformed one
    never joins (and breaks) an adaptive batch."""
    s = LIMITS["image_size"]
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


Photo = Annotated[Image.Image, BeforeValidator(checked_image)]
Pixels = Annotated[str, AfterValidator(checked_pixels)]


class ModelVersions(BaseModel):
    gender_version: str
    rating_version: str


class Prediction(BaseModel):
    """One photo's answer (a typed model: documented in the OpenAPI schema, serialised directly)."""
    gender: Literal["female", "male"]
    gender_probability: float = Field(ge=0.5, le=1.0, description="probability of the predicted gender")
    rating: float = Field(description="predicted attractiveness, on the 1-5 scale of the labels")
    model: ModelVersions


BATCH_SIZES = bentoml.metrics.Histogram(
    name="faces_predict_batch_size", documentation="photos per model call for /predict and /predict_batch",
    buckets=(1, 2, 4, 8, 16, 32, 64))


async def index(_request) -> HTMLResponse:
    return HTMLResponse((Path(__file__).parent / "static" / "index.html").read_text())


@bentoml.asgi_app(Starlette(routes=[Route("/", index)]), path="/")
@bentoml.service(resources={"gpu": 1, "cpu": "2"}, traffic={"timeout": 60}, workers=WORKERS,
                 tracing={"excluded_urls": UNTRACED})
class Faces:
    gender_ref = bentoml.models.BentoModel(GENDER_TAG)
    rating_ref = bentoml.models.BentoModel(RATING_TAG)

    def __init__(self) -> None:
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.set_num_threads(THREADS)
        self.models, self.versions, sizes = {}, {}, set()
        for task, ref in (("gender", self.gender_ref), ("rating", self.rating_ref)):
            net, _ = load_bundle(ref.path_of("model.pt"), map_location=self.device)
            self.models[task] = TaskModel(net, task).to(self.device).eval()
            meta = ref.info.metadata
            self.versions[f"{task}_version"] = ref.info.labels.get("mlflow_version", str(ref.tag.version))
            sizes.add(meta["image_size"])
        if len(sizes) != 1:
            raise RuntimeError(f"the two models expect different input sizes: {sorted(sizes)}")
        self.size, self.tta_flip = sizes.pop(), bool(meta.get("tta_flip", False))
        self.batcher = Batcher(self._forward, MAX_BATCH, on_batch=BATCH_SIZES.observe)
        LIMITS.update(max_upload_bytes=meta["max_upload_bytes"], max_pixels=meta["max_pixels"], image_size=self.size)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH, max_latency_ms=2000)
    def infer(self, pixels: list[Pixels]) -> list[list[float]]:
        """Photos as base64 pixels (see checked_pixels) -> [P(male), rating] each; concurrent calls
        are merged into one model batch (adaptive batching)."""
        s = self.size
        return self._forward([np.frombuffer(base64.b64decode(p), np.uint8).reshape(s, s, 3) for p in pixels])

    def _result(self, p_male: float, rating: float) -> Prediction:
        male = p_male >= 0.5
        return Prediction(gender="male" if male else "female", gender_probability=p_male if male else 1 - p_male,
                          rating=rating, model=ModelVersions(**self.versions))

    def _forward(self, photos: list[np.ndarray]) -> list[list[float]]:
        """(S, S, 3) uint8 photos -> [P(male), rating] each: the model call of the evaluate stage."""
        x = np.stack(photos)
        cols = [model_predict(self.models[t], x, tta_flip=self.tta_flip, device=self.device) for t in ("gender", "rating")]
        return np.stack(cols, axis=1).tolist()

    @bentoml.api
    async def predict(self, image: Photo) -> Prediction:
        """One photo (multipart field `image`) -> gender, its probability, rating, model versions."""
        (out,) = await self.batcher.run([fit_square(image, self.size)])
        return self._result(*out)

    @bentoml.api
    async def predict_batch(self, images: list[Photo]) -> list[Prediction]:
        """Several photos (repeated multipart field `images`) -> one result each, in order."""
        if not images:
            raise BadInput("no images")
        out = await self.batcher.run([fit_square(im, self.size) for im in images])
        return [self._result(*row) for row in out]


Faces.add_asgi_middleware(UploadGuard, max_bytes=lambda: LIMITS["max_upload_bytes"])
