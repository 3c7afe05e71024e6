"""The service with face-crop models (`ingest.crop: face`), over real HTTP: it finds the face, says where,
answers 422 for a photo without one, and crops exactly like ingest (pipeline/preprocess.frame)."""

import pytest

from conftest import TEST_SERVING, serving, tiny_bundle
from drawn import CFG, _face, _jpeg, _scene

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def face_server(tmp_path_factory):
    """`bentoml serve` of two tiny models packaged as trained on face crops, from a BentoML home of its
    own (conftest.serving's `own_home`: the session server's metrics stay live)."""
    from pipeline.core.preprocess import crop_contract
    from pipeline.stages.package import save_bundle

    tmp = tmp_path_factory.mktemp("face-bundles")
    meta = {"image_size": 32, "tta_flip": True, "serving": TEST_SERVING, "preprocess": crop_contract("face", CFG)}
    tags = {f"FACES_{t.upper()}_MODEL": str(save_bundle(f"face-{t}", tiny_bundle(tmp / f"{t}.pt", t),
                                                        {"mlflow_version": "3"}, meta).tag) for t in ("gender", "rating")}
    with serving(env=tags, own_home=True) as (url, _pid):
        yield url


def _post(url, *photos: bytes, path="/predict"):
    import httpx

    field = "image" if path == "/predict" else "images"
    files = [(field, (f"p{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]
    return httpx.post(url + path, files=files, timeout=60)


def test_the_answer_names_the_face_scored_in_the_uploaded_photos_pixels(face_server):
    r = _post(face_server, _jpeg(_scene(_face(3), at=(500, 300), side=320)))
    assert r.status_code == 200, r.text
    face = r.json()["face"]
    assert face["crop"] == "face" and face["faces_found"] == 1 and face["confidence"] >= CFG.min_neighbors
    x, y, w, h = face["box"]
    assert 500 < x + w / 2 < 820 and 300 < y + h / 2 < 620 and 120 < w < 320


def test_a_photo_without_a_face_is_422_with_a_clear_message_never_a_prediction(face_server):
    r = _post(face_server, _jpeg(_scene(None, seed=4)))
    assert r.status_code == 422
    body = r.json()
    body = body[0] if isinstance(body, list) else body          # BentoML's own 4xx shape: [{"error"}]
    assert body["error"].startswith("no face found") and "gender" not in r.text


def test_a_batch_names_the_photo_without_a_face(face_server):
    r = _post(face_server, _jpeg(_face(1)), _jpeg(_scene(None, seed=4)), path="/predict_batch")
    assert r.status_code == 422 and "photo 2 of 2: no face found" in r.text


def test_the_service_crops_exactly_like_ingest(face_server, tmp_path):
    """Train/serve agreement on the crop: the tiny model's answer for a scene equals its answer for
    the pixels ingest stores for that scene (sent through /infer, which takes cropped pixels), and
    differs from its answer for the centre crop (so the comparison can fail)."""
    import httpx

    from pipeline.core.preprocess import load_uint8

    def encode_pixels(a):              # service.encode_pixels; importing service.service here would
        import base64  # bind its module-level models to this module's face models

        return base64.b64encode(a.tobytes()).decode()

    scene = _jpeg(_scene(_face(2), at=(80, 120), side=400, seed=7))
    served = _post(face_server, scene).json()
    stored = load_uint8(scene, 32, 10**8, CFG)
    r = httpx.post(face_server + "/infer", json={"pixels": [encode_pixels(stored)]}, timeout=60)
    p_male, rating = r.json()[0]
    served_p_male = served["gender_probability"] if served["gender"] == "male" else 1 - served["gender_probability"]
    assert served_p_male == pytest.approx(p_male, abs=1e-6) and served["rating"] == pytest.approx(rating, abs=1e-5)
    centre = load_uint8(scene, 32, 10**8, None)                  # what a centre crop would have scored
    other = httpx.post(face_server + "/infer", json={"pixels": [encode_pixels(centre)]}, timeout=60).json()[0][0]
    assert abs(other - p_male) > 1e-4, "the test model cannot tell the face crop from the centre crop"


def test_openapi_documents_the_face_box(face_server):
    import httpx

    doc = httpx.get(face_server + "/docs.json").json()
    assert {"box", "confidence", "faces_found", "crop"} <= set(doc["components"]["schemas"]["FaceBox"]["properties"])
    for route in ("/predict", "/predict_batch"):
        answers = doc["paths"][route]["post"]["responses"]
        assert {"200", "400", "408", "413", "422", "503"} <= set(answers), route
        assert "No face found" in answers["422"]["description"]
    assert "422" not in doc["paths"]["/infer"]["post"]["responses"]


def test_demo_page_draws_the_box_where_the_face_is_and_says_no_face(face_server, tmp_path):
    from demo_page import open_demo, submit

    playwright = pytest.importorskip("playwright.sync_api")
    scene, empty = tmp_path / "scene.jpg", tmp_path / "empty.jpg"
    scene.write_bytes(_jpeg(_scene(_face(3), at=(500, 300), side=320)))
    empty.write_bytes(_jpeg(_scene(None, seed=4)))
    with playwright.sync_playwright() as p:
        browser, page = open_demo(p, face_server)
        submit(page, scene, "#box:not([hidden])")
        img, box = page.locator("#preview").bounding_box(), page.locator("#box").bounding_box()
        faces_text = page.inner_text("#faces")
        submit(page, empty, "#result.error")
        error, box_hidden = page.inner_text("#result"), page.locator("#box").is_hidden()
        browser.close()
    k = img["width"] / 900                                   # the scene is 900 px wide
    centre = ((box["x"] - img["x"] + box["width"] / 2) / k, (box["y"] - img["y"] + box["height"] / 2) / k)
    assert 560 < centre[0] < 760 and 360 < centre[1] < 560, centre     # the face: (500..820, 300..620)
    assert "1 face(s) found" in faces_text
    assert "no face found" in error and box_hidden
