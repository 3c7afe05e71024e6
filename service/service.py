"""BentoML service: gender and attractiveness rating for a face photo, from the champion models.

    make serve      # = bentoml serve service.service:Faces --host 127.0.0.1 --port 3000
    curl -F image=@service/example.jpg 127.0.0.1:3000/predict

Models come from the BentoML store (`pipeline/package.py` puts the MLflow champions there); the tags
default to the latest `faces-gender` / `faces-rating` and can be pinned with FACES_GENDER_MODEL /
FACES_RATING_MODEL. Uploads go through the pipeline's own `open_rgb` + `fit_square`, and the model
call is `pipeline.model.predict`, as in the evaluate stage. A bad upload is a 400 with a message.
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Annotated

import anyio
import bentoml
import numpy as np
from bentoml.exceptions import BadInput
from bentoml.validators import ContentType
from PIL import Image
from pydantic import AfterValidator
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from pipeline.model import TaskModel, load_bundle
from pipeline.model import predict as model_predict
from pipeline.preprocess import ImageError, fit_square, open_rgb
from service.guard import UploadGuard

EXAMPLE_INPUT = Path(__file__).parent / "example.jpg"
GENDER_TAG = os.environ.get("FACES_GENDER_MODEL", "faces-gender:latest")
RATING_TAG = os.environ.get("FACES_RATING_MODEL", "faces-rating:latest")
MAX_BATCH = 64
WORKERS = 2                                             # processes, each with its own copy of the models
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)     # torch threads per worker: no oversubscription
# replaced by the models' metadata at start-up (validators run in the worker that loaded the models)
LIMITS = {"max_upload_bytes": 10 * 2**20, "max_pixels": 40_000_000, "image_size": 0}


def checked_image(path: Path) -> Image.Image:
    """Upload -> RGB image, or ValueError (BentoML answers 400 with the message, no temp paths)."""
    size = path.stat().st_size
    if size > LIMITS["max_upload_bytes"]:
        raise ValueError(f"file too large: {size} bytes > {LIMITS['max_upload_bytes']}")
    try:
        return open_rgb(path, LIMITS["max_pixels"])
    except ImageError as e:
        raise ValueError(f"unusable image: {e.reason}") from None


def checked_pixels(b64: str) -> str:
    """Raw /infer input, one photo as base64 of its S*S*3 uint8 pixels (row-major, RGB): compact, so
    the in-process hop behind adaptive batching costs little. Validated per request, so a malformed
    one never joins (and breaks) a batch. Returns the string itself: BentoML's self-proxy runs the
    validator on the calling side too, and a string travels as a string."""
    s = LIMITS["image_size"]
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("pixels must be base64") from None
    if len(raw) != s * s * 3:
        raise ValueError(f"pixels must be {s}*{s}*3 = {s * s * 3} bytes, got {len(raw)}")
    return b64


def encode_pixels(a: np.ndarray) -> str:
    """(S, S, 3) uint8 -> the /infer wire format."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode()


Photo = Annotated[Path, ContentType("image/*"), AfterValidator(checked_image)]
Pixels = Annotated[str, AfterValidator(checked_pixels)]


async def index(_request) -> HTMLResponse:
    return HTMLResponse((Path(__file__).parent / "static" / "index.html").read_text())


@bentoml.asgi_app(Starlette(routes=[Route("/", index)]), path="/")
# runner_connection: the in-process client behind self.to_async is otherwise recycled every 100
# requests, failing the requests in flight with 500s under concurrency (seen at 8 and 32 clients)
@bentoml.service(resources={"gpu": 1, "cpu": "2"}, traffic={"timeout": 60}, workers=WORKERS,
                 runner_connection={"max_requests": 1_000_000_000, "max_age": 10 * 365 * 86400.0})
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
        self._in_flight = 0                       # /predict requests being answered by this worker
        LIMITS.update(max_upload_bytes=meta["max_upload_bytes"], max_pixels=meta["max_pixels"], image_size=self.size)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH, max_latency_ms=2000)
    def infer(self, pixels: list[Pixels]) -> list[list[float]]:
        """Photos as base64 pixels (see checked_pixels) -> [P(male), rating] each; concurrent calls
        are merged into one model batch (adaptive batching)."""
        s = self.size
        return self._forward(np.stack([np.frombuffer(base64.b64decode(p), np.uint8).reshape(s, s, 3) for p in pixels]))

    def _result(self, p_male: float, rating: float) -> dict:
        male = p_male >= 0.5
        return {"gender": "male" if male else "female", "gender_probability": float(p_male if male else 1 - p_male),
                "rating": float(rating), "model": dict(self.versions)}

    def _forward(self, x: np.ndarray) -> list[list[float]]:
        """(N, S, S, 3) uint8 -> [P(male), rating] per photo: the model call of the evaluate stage."""
        cols = [model_predict(self.models[t], x, tta_flip=self.tta_flip, device=self.device) for t in ("gender", "rating")]
        return np.stack(cols, axis=1).tolist()

    @bentoml.api
    async def predict(self, image: Photo) -> dict:
        """One photo (multipart field `image`) -> gender, its probability, rating, model versions."""
        pixels = fit_square(image, self.size)
        self._in_flight += 1
        try:
            if self._in_flight == 1:     # alone: a batch of one needs no batching hop (~7 ms at c=1)
                out = await anyio.to_thread.run_sync(self._forward, pixels[None])
            else:                        # concurrent requests meet in infer's adaptive batches
                out = await self.to_async.infer([encode_pixels(pixels)])
        finally:
            self._in_flight -= 1
        return self._result(*out[0])

    @bentoml.api
    async def predict_batch(self, images: list[Photo]) -> list[dict]:
        """Several photos (repeated multipart field `images`) -> one result each, in order."""
        if not images:
            raise BadInput("no images")
        out = await self.to_async.infer([encode_pixels(fit_square(im, self.size)) for im in images])
        return [self._result(*row) for row in out]


Faces.add_asgi_middleware(UploadGuard, max_bytes=lambda: LIMITS["max_upload_bytes"])
