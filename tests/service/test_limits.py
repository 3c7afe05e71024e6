"""service/limits.py: the models are verified before anything serves them; bounds come from them."""
import os
import subprocess
import sys

import bentoml
import pytest

from pipeline.core.execution import Execution
from pipeline.stages.package import save_bundle
from service.limits import Bounds, Contract, ModelError, Served, check_models, guard_routes

from conftest import CENTRE, DEFAULT_EXECUTION, ROOT, TEST_SERVING, free_port, tiny_bundle, venv_env


def _stored(tmp_path, task, name, **meta):
    meta = {"image_size": 32, "tta_flip": True, "serving": TEST_SERVING, "preprocess": CENTRE,
            "execution": DEFAULT_EXECUTION, **meta}
    return save_bundle(name, tiny_bundle(tmp_path / f"{name}.pt", task), {"mlflow_version": "1"}, meta)


def test_limits_come_from_the_models_metadata(tmp_path):
    refs = {t: _stored(tmp_path, t, f"lim-{t}") for t in ("gender", "rating")}
    limits = check_models(refs)
    assert limits == Served(Contract(image_size=32, tta_flip=True, face=None, execution=Execution("auto", True)),
                            Bounds(**TEST_SERVING))
    routes = guard_routes(limits.bounds, limits.contract.image_size)
    assert routes["/predict"].max_files == 1 and routes["/predict_batch"].max_files == 4
    assert routes["/predict_batch"].max_bytes == 3 * 2**20 and routes["/predict"].max_file_bytes == 2**20
    assert routes["/infer"].max_bytes >= 4 * 32 * 32 * 3 * 4 // 3


@pytest.mark.parametrize("change, message", [
    (lambda bm: os.truncate(bm.path_of("model.pt"), 500), "is corrupt: sha256"),
    (lambda bm: os.remove(bm.path_of("model.pt")), "is missing"),
])
def test_a_damaged_model_is_named_with_its_path_and_expected_hash(tmp_path, change, message):
    bm = _stored(tmp_path, "gender", "dmg-gender")
    change(bm)
    with pytest.raises(ModelError) as e:
        check_models({"gender": bm})
    text = str(e.value)
    assert message in text and str(bm.tag) in text and bm.path_of("model.pt") in text
    assert bm.info.metadata["sha256"] in text


def test_models_packaged_before_hashes_or_with_other_bounds_are_refused(tmp_path):
    old = save_bundle("old-gender", tiny_bundle(tmp_path / "o.pt", "gender"), {}, {"image_size": 32})
    with pytest.raises(ModelError, match="without a weights hash"):
        check_models({"gender": old})
    a, b = _stored(tmp_path, "gender", "pair-gender"), _stored(tmp_path, "rating", "pair-rating", image_size=48)
    with pytest.raises(ModelError, match="disagree"):
        check_models({"gender": a, "rating": b})
    fp32 = _stored(tmp_path, "rating", "fp32-rating", execution={"precision": "fp32", "channels_last": True})
    with pytest.raises(ModelError, match="execution policy"):
        check_models({"gender": a, "rating": fp32})


def test_a_model_stored_with_another_normalisation_is_refused(tmp_path):
    from pipeline.core.preprocess import MEAN, STD

    same = _stored(tmp_path, "gender", "norm-gender", mean=list(MEAN), std=list(STD))
    check_models({"gender": same})
    other = _stored(tmp_path, "gender", "norm2-gender", mean=[0.485, 0.456, 0.406], std=list(STD))
    with pytest.raises(ModelError, match="trained with mean"):
        check_models({"gender": other})


def test_a_model_packaged_before_the_execution_policy_runs_as_it_was_scored_fp32_nchw(tmp_path):
    meta = {"image_size": 32, "tta_flip": True, "serving": TEST_SERVING, "preprocess": CENTRE}
    refs = {t: save_bundle(f"pre-{t}", tiny_bundle(tmp_path / f"pre-{t}.pt", t), {}, meta) for t in ("gender", "rating")}
    assert check_models(refs).contract.execution == Execution("fp32", False)


@pytest.mark.slow
@pytest.mark.integration
def test_bentoml_serve_exits_with_the_message_on_a_bit_flipped_model_instead_of_restarting(tmp_path):
    bm, good = _stored(tmp_path, "gender", "flip-gender"), _stored(tmp_path, "rating", "flip-rating")
    with open(bm.path_of("model.pt"), "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0x01]))
    env = {**venv_env(), "FACES_GENDER_MODEL": str(bm.tag), "FACES_RATING_MODEL": str(good.tag)}
    bentoml_cli = os.path.join(os.path.dirname(sys.executable), "bentoml")
    p = subprocess.run([bentoml_cli, "serve", "service.service:Faces", "--host", "127.0.0.1", "--port",
                        str(free_port())], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert p.returncode != 0
    assert f"model {bm.tag}" in p.stderr and "is corrupt" in p.stderr and bm.info.metadata["sha256"] in p.stderr
    assert p.stderr.count("is corrupt") == 1                  # said once: no worker restart loop
    assert bentoml.models.get(good.tag) is not None


def test_a_tag_missing_from_the_store_stops_the_service_with_its_name():
    import bentoml

    ref = bentoml.models.BentoModel("faces-gender:nosuchversion")
    with pytest.raises(ModelError, match=r"faces-gender:nosuchversion is not in the BentoML store.*make repro"):
        check_models({"gender": ref})
