import bentoml
import torch

from pipeline.package import find_packaged, save_bundle

from conftest import tiny_bundle


def test_saved_bundle_carries_labels_metadata_and_loads_with_weights_only(tmp_path):
    path = tiny_bundle(tmp_path / "m.pt", "rating")
    labels = {"mlflow_model": "faces-synthetic-rating", "mlflow_version": "3"}
    bm = save_bundle("pkg-rating", path, labels, {"image_size": 32})
    stored = bentoml.models.get(bm.tag)
    assert stored.info.labels == labels and stored.info.metadata["image_size"] == 32
    bundle = torch.load(stored.path_of("model.pt"), weights_only=True)
    assert bundle["task"] == "rating" and bundle["heads"] == ["rating"]


def test_an_already_packaged_champion_is_found_instead_of_saved_again(tmp_path):
    path = tiny_bundle(tmp_path / "m.pt", "gender")
    assert find_packaged("pkg-gender", {"mlflow_version": "1"}) is None      # no model of that name yet
    first = save_bundle("pkg-gender", path, {"mlflow_model": "x", "mlflow_version": "1"}, {})
    save_bundle("pkg-gender", path, {"mlflow_model": "x", "mlflow_version": "2"}, {})
    found = find_packaged("pkg-gender", {"mlflow_model": "x", "mlflow_version": "1"})
    assert found is not None and found.tag == first.tag
    assert find_packaged("pkg-gender", {"mlflow_model": "x", "mlflow_version": "9"}) is None
    assert len(bentoml.models.list("pkg-gender")) == 2
