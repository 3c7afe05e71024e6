"""What the photo routes answer: typed pydantic models (documented in the OpenAPI schema, serialised
directly), and the 422 of a photo without a face."""
from __future__ import annotations

from typing import Literal

from bentoml.exceptions import UnprocessableEntity
from pydantic import BaseModel, Field


class ModelVersions(BaseModel):
    gender_version: str
    rating_version: str
    source: str = Field(description="the data the models learnt from: `synthetic` (drawn faces: the answer "
                                    "says nothing about a real face) or a real photo set, e.g. `scut`")
    refit: bool = Field(description="the weights learnt from every photo of the data (train + val + test); "
                                    "their test metrics are the estimate of the same recipe trained on the split")


class FaceBox(BaseModel):
    """Where the model looked: pixel coordinates in the uploaded photo as displayed (EXIF
    orientation applied), origin top left."""
    crop: Literal["face", "centre"] = Field(description="face: the face step found this face; centre: "
                                            "models trained on centre crops score the centred square")
    box: list[int] = Field(min_length=4, max_length=4, description="[x, y, width, height] of the face "
                           "(crop=face) or of the centred square (crop=centre)")
    confidence: int | None = Field(description="detector confidence: how many overlapping detection windows "
                                   "voted for this face (OpenCV Haar neighbours; >= the model's min_neighbors, "
                                   "higher is surer); null for centre crops")
    angle: float = Field(description="degrees the face was turned back to upright before scoring (0: upright)")
    faces_found: int = Field(description="faces found in the photo; the largest is scored (0 for centre crops)")


class Prediction(BaseModel):
    """One photo's answer (a typed model: documented in the OpenAPI schema, serialised directly)."""
    gender: Literal["female", "male"]
    gender_probability: float = Field(ge=0.5, le=1.0, description="probability of the predicted gender")
    rating: float = Field(description="predicted attractiveness, on the 1-5 scale of the labels")
    face: FaceBox
    model: ModelVersions


class NoFace(UnprocessableEntity):
    """422: the photo is fine, but no face was found in it (never a made-up prediction)."""
