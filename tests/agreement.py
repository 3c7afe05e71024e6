"""Train/serve agreement, shared by the end-to-end tests: the service (its ASGI app in a subprocess of
the temp repo) answers each test photo FILE, and that must equal what the evaluate stage scored."""
import json
import subprocess
import sys

import pandas as pd
import pytest

AGREEMENT = """
import json, os, sys
from pathlib import Path
images = Path(sys.argv[1])
serving = json.loads(Path("models/serving.json").read_text())
os.environ["FACES_GENDER_MODEL"], os.environ["FACES_RATING_MODEL"] = serving["gender"]["tag"], serving["rating"]["tag"]
from starlette.testclient import TestClient
from pipeline.core.data import read_names
from service.service import asgi
out = {}
with TestClient(asgi()) as c:
    for name in read_names(Path("data/split/test.txt")):       # keys <source>/<file>
        r = c.post("/predict", files={"image": (name, (images / name.split("/", 1)[1]).read_bytes(), "image/jpeg")})
        b = r.json()
        out[name] = [b["gender_probability"] if b["gender"] == "male" else 1 - b["gender_probability"], b["rating"],
                     b["face"]["crop"]]
print(json.dumps(out))
"""


def service_agrees_with_evaluate(repo, images="data/synthetic/images", crop="centre"):
    """Train/serve agreement: the service's answer for each test photo FILE equals the evaluate stage's."""
    p = subprocess.run([sys.executable, "-c", AGREEMENT, str(images)], cwd=repo, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    served = json.loads(p.stdout.strip().splitlines()[-1])
    gender = pd.read_csv(repo / "reports/eval/gender/predictions.csv").set_index("filename")["score"]
    rating = pd.read_csv(repo / "reports/eval/rating/predictions.csv").set_index("filename")["score"]
    assert set(served) == set(gender.index) == set(rating.index) and len(served) > 0
    for name, (p_male, r, how) in served.items():
        assert how == crop, name
        assert p_male == pytest.approx(gender[name], abs=1e-5), name
        assert r == pytest.approx(rating[name], abs=1e-5), name
