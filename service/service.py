"""BentoML service: gender and attractiveness rating for a face photo, from the champion models.

    make serve      # = bentoml serve service.service:Faces --host 127.0.0.1 --port 3000
    curl -F image=@service/example.jpg 127.0.0.1:3000/predict

Models come from the BentoML store (`pipeline/package.py` puts the MLflow champions there); the tags
default to the latest `faces-gender` / `faces-rating` and can be pinned with FACES_GENDER_MODEL /
FACES_RATING_MODEL. Uploads go through the pipeline's own `open_rgb` + `fit_square`, and the model
call is `pipeline.model.predict`, as in the evaluate stage. A bad upload is a 400 with a message.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.exceptions import BadInput
from bentoml.validators import ContentType
from PIL import Image
from pydantic import AfterValidator
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from pipeline.preprocess import ImageError, fit_square, open_rgb
from service.guard import UploadGuard

EXAMPLE_INPUT = Path(__file__).parent / "example.jpg"
GENDER_TAG = os.environ.get("FACES_GENDER_MODEL", "faces-gender:latest")
RATING_TAG = os.environ.get("FACES_RATING_MODEL", "faces-rating:latest")
MAX_BATCH = 64
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


def checked_pixels(a: np.ndarray) -> np.ndarray:
    """Raw /infer input: validated per request, so a malformed one never joins (and breaks) a batch."""
    s = LIMITS["image_size"]
    if a.ndim != 4 or a.shape[1:] != (s, s, 3) or not 1 <= len(a) <= MAX_BATCH:
        raise ValueError(f"pixels must have shape (N <= {MAX_BATCH}, {s}, {s}, 3), got {a.shape}")
    if a.min() < 0 or a.max() > 255:
        raise ValueError("pixel values must be in 0..255")
    return a.astype(np.uint8)


Photo = Annotated[Path, ContentType("image/*"), AfterValidator(checked_image)]
Pixels = Annotated[np.ndarray, AfterValidator(checked_pixels)]


async def index(_request) -> HTMLResponse:
    return HTMLResponse((Path(__file__).parent / "static" / "index.html").read_text())


@bentoml.asgi_app(Starlette(routes=[Route("/", index)]), path="/")
@bentoml.service(resources={"gpu": 1, "cpu": "2"}, traffic={"timeout": 60})
class Faces:
    gender_ref = bentoml.models.BentoModel(GENDER_TAG)
    rating_ref = bentoml.models.BentoModel(RATING_TAG)

    def __init__(self) -> None:
        import torch

        from pipeline.model import TaskModel, load_bundle

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
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
        LIMITS.update(max_upload_bytes=meta["max_upload_bytes"], max_pixels=meta["max_pixels"], image_size=self.size)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH, max_latency_ms=2000)
    def infer(self, pixels: Pixels) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, 2) [P(male), rating]; concurrent calls are batched together."""
        from pipeline.model import predict

        cols = [predict(self.models[t], pixels, tta_flip=self.tta_flip, device=self.device)
                for t in ("gender", "rating")]
        return np.stack(cols, axis=1)

    def _result(self, p_male: float, rating: float) -> dict:
        male = p_male >= 0.5
        return {"gender": "male" if male else "female", "gender_probability": float(p_male if male else 1 - p_male),
                "rating": float(rating), "model": dict(self.versions)}

    @bentoml.api
    async def predict(self, image: Photo) -> dict:
        """One photo (multipart field `image`) -> gender, its probability, rating, model versions."""
        out = await self.to_async.infer(fit_square(image, self.size)[None])
        return self._result(*out[0])

    @bentoml.api
    async def predict_batch(self, images: list[Photo]) -> list[dict]:
        """Several photos (repeated multipart field `images`) -> one result each, in order."""
        if not images:
            raise BadInput("no images")
        out = await self.to_async.infer(np.stack([fit_square(im, self.size) for im in images]))
        return [self._result(*row) for row in out]


Faces.add_asgi_middleware(UploadGuard, max_bytes=lambda: LIMITS["max_upload_bytes"])
