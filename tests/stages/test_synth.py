import hashlib

import numpy as np
import pandas as pd

from pipeline.core.sources import parse_name
from pipeline.stages.synth import generate, render_face, sample_face


def _digest(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted((folder / "images").iterdir())}


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    a = generate(tmp_path / "a", 12, 48, seed=3, noise=0.25)
    b = generate(tmp_path / "b", 12, 48, seed=3, noise=0.25)
    c = generate(tmp_path / "c", 12, 48, seed=4, noise=0.25)
    assert a == b and _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert [r for _, r in a] != [r for _, r in c]


def test_course_layout_names_and_ratings(tiny_faces):
    df = pd.read_csv(tiny_faces / "FaceScore.csv")
    assert list(df.columns) == ["Filename", "Rating"] and len(df) == 40
    assert df["Rating"].between(1, 5).all()
    assert all(parse_name(n) is not None for n in df["Filename"])
    assert {n[0] for n in df["Filename"]} == {"f", "m"} and {n[2] for n in df["Filename"]} == {"w", "y"}
    assert all((tiny_faces / "images" / n).is_file() for n in df["Filename"])


def test_rating_is_the_documented_function_of_the_traits():
    rng = np.random.default_rng(0)
    faces = [sample_face(rng, noise=0.0) for _ in range(200)]
    for f in faces:
        expected = 1 + 4 * (0.40 * f.symmetry + 0.35 * f.proportion + 0.25 * f.smoothness)
        assert abs(f.rating - expected) < 1e-3
    noisy = [sample_face(np.random.default_rng(i), noise=0.25) for i in range(300)]
    assert all(1.0 <= f.rating <= 5.0 for f in noisy)


def test_gender_cues_show_in_pixels():
    """Long hair for women: the bottom corners of the head box are hair, not background."""
    rng = np.random.default_rng(0)
    base = sample_face(rng, 0.25)
    f = render_face(base.__class__(**{**base.__dict__, "gender": "f"}), 96, np.random.default_rng(5))
    m = render_face(base.__class__(**{**base.__dict__, "gender": "m"}), 96, np.random.default_rng(5))
    assert f.size == m.size == (96, 96)
    assert np.abs(np.asarray(f, float) - np.asarray(m, float)).mean() > 5
