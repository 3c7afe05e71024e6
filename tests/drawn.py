"""Drawn faces and scenes for the face-step tests (not a test module): the project's synthetic faces on
clutter, which the Haar cascade finds, so these tests run without the real photos. Imported by the face,
ingest, service and real-data tests wherever pytest collects them (tests/ is on sys.path via conftest)."""
import io
import sys

import numpy as np
from PIL import Image

from pipeline.core.config import load_params
from pipeline.core.face import FaceConfig
from pipeline.stages.synth import render_face, sample_face

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from wild import clutter  # noqa: E402

CFG: FaceConfig = load_params(ROOT / "params.yaml").ingest.face


def _face(seed=0, size=160) -> Image.Image:
    rng = np.random.default_rng(seed)
    return render_face(sample_face(rng, 0.25), size, rng)


def _scene(face: Image.Image | None, at=(400, 200), side=300, size=(900, 700), seed=0) -> Image.Image:
    scene = clutter(np.random.default_rng(seed), *size, blobs=0)
    if face is not None:
        scene.paste(face.resize((side, side), Image.Resampling.LANCZOS), at)
    return scene


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()
