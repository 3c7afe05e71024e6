import subprocess
import sys

import bentoml
import pytest
import torch

from pipeline.core.atomic import sha256_file
from pipeline.stages.package import find_packaged, save_bundle, sweep_broken

from conftest import ROOT, tiny_bundle, venv_env


def test_saved_bundle_carries_labels_metadata_hash_and_loads_with_weights_only(tmp_path):
    path = tiny_bundle(tmp_path / "m.pt", "rating")
    labels = {"mlflow_model": "faces-synthetic-rating", "mlflow_version": "3"}
    bm = save_bundle("pkg-rating", path, labels, {"image_size": 32})
    stored = bentoml.models.get(bm.tag)
    assert stored.info.labels == labels and stored.info.metadata["image_size"] == 32
    assert stored.info.metadata["sha256"] == sha256_file(path) == sha256_file(stored.path_of("model.pt"))
    bundle = torch.load(stored.path_of("model.pt"), weights_only=True)
    assert bundle["task"] == "rating" and bundle["heads"] == ["rating"]


def test_an_already_packaged_champion_is_found_instead_of_saved_again(tmp_path):
    path = tiny_bundle(tmp_path / "m.pt", "gender")
    assert find_packaged("pkg-gender", {"mlflow_version": "1"}) is None      # no model of that name yet
    first = save_bundle("pkg-gender", path, {"mlflow_model": "x", "mlflow_version": "1"}, {"serving": {"a": 1}})
    save_bundle("pkg-gender", path, {"mlflow_model": "x", "mlflow_version": "2"}, {})
    meta = {"serving": {"a": 1}, "sha256": sha256_file(path)}
    found = find_packaged("pkg-gender", {"mlflow_model": "x", "mlflow_version": "1"}, meta)
    assert found is not None and found.tag == first.tag
    assert find_packaged("pkg-gender", {"mlflow_model": "x", "mlflow_version": "9"}) is None
    # same champion, other serving bounds: packaged anew (the service reads its bounds from the model)
    assert find_packaged("pkg-gender", {"mlflow_model": "x", "mlflow_version": "1"},
                         {**meta, "serving": {"a": 2}}) is None
    assert len(bentoml.models.list("pkg-gender")) == 2


# `save_bundle` killed with SIGKILL in the middle of its N-th file copy (half the bytes written)
KILL_COPY = r'''
import os, shutil, signal, sys
from pipeline.stages.package import save_bundle
n, count, copy = int(sys.argv[3]), [0], shutil.copyfile
def killing_copy(src, dst, *a, **k):
    count[0] += 1
    if count[0] == n:
        data = open(src, "rb").read()
        with open(dst, "wb") as f:
            f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return copy(src, dst, *a, **k)
shutil.copyfile = killing_copy
save_bundle(sys.argv[1], sys.argv[2], {"mlflow_version": "1"}, {})
'''


@pytest.mark.slow
@pytest.mark.parametrize("copy", [1, 2, 3])     # into BentoML's temp folder; into the store (yaml, weights)
def test_package_killed_mid_copy_leaves_nothing_that_blocks_or_gets_served(tmp_path, copy):
    name = f"kill{copy}-rating"
    path = tiny_bundle(tmp_path / "m.pt", "rating")
    p = subprocess.run([sys.executable, "-c", KILL_COPY, name, str(path), str(copy)], cwd=ROOT, env=venv_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -9, p.stderr[-2000:]
    sweep_broken(name)
    assert find_packaged(name, {"mlflow_version": "1"}) is None          # and listing works again
    bm = save_bundle(name, path, {"mlflow_version": "1"}, {})
    assert find_packaged(name, {"mlflow_version": "1"}).tag == bm.tag
    assert sha256_file(bm.path_of("model.pt")) == bm.info.metadata["sha256"]
