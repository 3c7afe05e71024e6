"""The service as users reach it: `bentoml serve` over real HTTP (the `server` fixture in conftest.py),
the demo page in headless Chromium, and `bentoml build`. In-process API checks: test_service.py."""
import pytest


def _photos(real_dir, tiny_dir, n=10):
    photos = sorted((tiny_dir / "images").iterdir())[:n]
    if real_dir is not None:
        photos += sorted((real_dir / "images").iterdir())[:n]
    return photos


@pytest.mark.slow
@pytest.mark.integration
def test_real_server_answers_real_http_and_50_concurrent_requests(server, tiny_faces):
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from conftest import REAL_DATA

    real = REAL_DATA if (REAL_DATA / "images").is_dir() else None
    photos = _photos(real, tiny_faces)
    with httpx.Client(base_url=server, timeout=60) as c:
        for p in photos:
            r = c.post("/predict", files={"image": (p.name, p.read_bytes(), "image/jpeg")})
            assert r.status_code == 200 and r.json()["gender"] in ("female", "male"), r.text
        assert c.post("/predict", files={"image": ("x.jpg", b"junk", "image/jpeg")}).status_code == 400

        def one(i):
            """A well-behaved client: on 503 it waits Retry-After seconds and tries again (3 times)."""
            p, shed = photos[i % len(photos)], 0
            for _ in range(4):
                r = c.post("/predict", files={"image": (p.name, p.read_bytes(), "image/jpeg")})
                if r.status_code != 503:
                    return r.status_code, shed
                assert r.json()["error"] and int(r.headers["retry-after"]) >= 1
                shed += 1
                time.sleep(int(r.headers["retry-after"]))
            return r.status_code, shed

        # the server is shared with other test files: count only this burst's model calls
        before = _histogram(c.get("/metrics").text, "faces_predict_batch_size")
        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(one, range(50)))
        assert [code for code, _ in results] == [200] * 50
        # the test models admit 8 requests per worker (TEST_SERVING): 50 at once must shed some
        assert sum(shed for _, shed in results) > 0
        after = _histogram(c.get("/metrics").text, "faces_predict_batch_size")
        calls, photos = after["count"] - before["count"], after["sum"] - before["sum"]
        assert photos >= 50 and calls < photos, f"50 concurrent photos never shared a model call: {before} -> {after}"


def _histogram(metrics: str, name: str) -> dict:
    """Prometheus text -> {"count": model calls, "sum": photos} of one histogram, over all workers."""
    out = {"count": 0.0, "sum": 0.0}
    for line in metrics.splitlines():
        for key in out:
            if line.startswith(f"{name}_{key}"):
                out[key] += float(line.rsplit(" ", 1)[1])
    return out


@pytest.mark.slow
@pytest.mark.integration
def test_demo_page_in_headless_chromium(server, tmp_path):
    from demo_page import open_demo, submit

    playwright = pytest.importorskip("playwright.sync_api")
    from service.service import EXAMPLE_INPUT

    with playwright.sync_playwright() as p:
        browser, page = open_demo(p, server)
        submit(page, EXAMPLE_INPUT, "#rating")
        gender, rating = page.inner_text("#gender"), float(page.inner_text("#rating"))
        trained = page.inner_text("#trained")
        page.screenshot(path=str(tmp_path / "page.png"))
        submit(page, {"name": "bad.jpg", "mimeType": "image/jpeg", "buffer": b"junk"}, "#result.error")
        error = page.inner_text("#result")
        browser.close()
    assert gender in ("female", "male") and 1 <= rating <= 5
    assert "synthetic (drawn) faces only" in trained           # the test models' source label
    assert "not an image" in error


@pytest.mark.slow
@pytest.mark.integration
def test_bentoml_build_makes_a_bento_with_both_models_offline(served_models):
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    bentoml = os.path.join(os.path.dirname(sys.executable), "bentoml")
    p = subprocess.run([bentoml, "build", "--output", "tag"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    tag = p.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    info = subprocess.run([bentoml, "get", tag, "-o", "json"], capture_output=True, text=True, check=True)
    models = {m["tag"] for s in json.loads(info.stdout)["services"] for m in s["models"]}
    assert models == set(served_models.values())


def test_the_readme_python_client_runs_against_a_live_server(server):
    """The README's client block, as written, against `bentoml serve` (only the URL is replaced)."""
    import re
    import subprocess
    import sys

    from conftest import ROOT, venv_env

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- client:begin -->\s*```python\n(.*?)```\s*<!-- client:end -->", readme, re.S).group(1)
    assert '"http://127.0.0.1:3000"' in block
    code = block.replace('"http://127.0.0.1:3000"', repr(server))
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=venv_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    first, second = p.stdout.strip().splitlines()[-2:]
    gender, rating = first.split()
    assert gender in ("female", "male") and 1 <= float(rating) <= 5
    assert f"'rating': {rating}" in second or f'"rating": {rating}' in second or rating[:5] in second


def test_a_part_without_a_content_type_is_read_from_its_bytes_and_a_wrong_one_refused(server):
    """What the README says of `requests`: the type may be left out; a declared non-image type is a 415."""
    import requests

    from service.service import EXAMPLE_INPUT

    r = requests.post(f"{server}/predict", files={"image": ("x.jpg", EXAMPLE_INPUT.read_bytes())}, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.post(f"{server}/predict", files={"image": ("x.jpg", EXAMPLE_INPUT.read_bytes(), "text/plain")},
                      timeout=30)
    assert r.status_code == 415, r.text
