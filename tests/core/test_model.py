import numpy as np
import pytest
import torch

from pipeline.core.layers import layer_table
from pipeline.core.model import ARCHS, ModelConfig, TaskModel, build_model, count_params, load_bundle, predict

WIDTHS = {"course": (100, 100, 100), "convnet": (8, 16, 32), "resnet": (8, 16, 32)}


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("size", [32, 48, 64])
def test_every_arch_gives_each_head_its_shape_and_counts_match(arch, size):
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch, WIDTHS[arch], 0.1, size), ["gender", "rating", "group"]).eval()
    out = net(torch.randn(3, 3, size, size))
    assert out["gender"].shape == (3, 2) and out["group"].shape == (3, 6) and out["rating"].shape == (3,)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert net.forward_features(torch.randn(2, 3, size, size)).shape == (2, net.num_features)
    assert sum(r.params for r in layer_table(net, size)) == count_params(net) == \
        sum(p.numel() for p in net.parameters())


def test_course_network_has_the_courses_337510_parameters_layer_by_layer():
    net = build_model(ModelConfig("course", (100, 100, 100), 0.0, 128), {"outputs": 10})
    rows = [r for r in layer_table(net, 128) if r.params]
    assert [r.params for r in rows] == [1300, 40100, 40100, 256010]
    assert [r.formula for r in rows] == ["(2*2*3 + 1)*100", "(2*2*100 + 1)*100", "(2*2*100 + 1)*100",
                                         "(25600 + 1)*10"]
    assert [r.output for r in rows] == ["100x128x128", "100x64x64", "100x32x32", "10"]
    assert count_params(net) == 337_510
    # with our heads: gender (25600 + 1)*2 = 51202, rating 25601
    two = build_model(ModelConfig("course", (100, 100, 100), 0.0, 128), ["gender", "rating"])
    assert count_params(two) == 1300 + 2 * 40100 + 51202 + 25601


def test_gap_head_does_not_depend_on_input_size():
    a = build_model(ModelConfig("convnet", (8, 16), 0.0, 32), ["gender"])
    b = build_model(ModelConfig("convnet", (8, 16), 0.0, 96), ["gender"])
    assert count_params(a) == count_params(b)


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model(ModelConfig("vgg", (8,), 0.0, 32), ["gender"])


def test_task_model_and_predict_with_flip_averaging(tmp_path):
    torch.manual_seed(0)
    net = build_model(ModelConfig("convnet", (8, 16), 0.0, 32), ["gender", "rating"])
    images = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    p = predict(TaskModel(net, "gender"), images, batch_size=2)
    assert p.shape == (5,) and ((p >= 0) & (p <= 1)).all()
    both = predict(TaskModel(net, "rating"), images, tta_flip=True)
    plain = predict(TaskModel(net, "rating"), images)
    mirrored = predict(TaskModel(net, "rating"), images[:, :, ::-1].copy())
    np.testing.assert_allclose(both, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    torch.save({"state_dict": net.state_dict(), "model_config": {"arch": "convnet", "widths": (8, 16),
                "dropout": 0.0, "image_size": 32}, "heads": ["gender", "rating"], "task": "gender"},
               tmp_path / "m.pt")
    loaded, bundle = load_bundle(tmp_path / "m.pt")
    np.testing.assert_allclose(predict(TaskModel(loaded, "rating"), images), plain, rtol=1e-6)
