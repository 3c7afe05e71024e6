import dataclasses

import pytest
import torch

from pipeline.config import load_params
from pipeline.evaluate import compute_metrics
from pipeline.model import ModelConfig, TaskModel, build_model, predict
from pipeline.train import fit, select_device

from conftest import ROOT


def _cfg(task, **kw):
    base = getattr(load_params(ROOT / "params.yaml").train, task)
    return dataclasses.replace(base, **{"widths": (16, 32, 64), "batch_size": 32, "patience": 100,
                                        "epochs": 10, **kw})


def _net(cfg, task, size=32):
    torch.manual_seed(0)
    return build_model(ModelConfig("convnet", cfg.widths, cfg.dropout, size), [task, *cfg.aux_tasks])


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)          # bitwise-repeatable CPU numerics for the comparisons below
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("task, metric, floor", [("gender", "accuracy", 0.8), ("rating", "pearson", 0.1)])
def test_tiny_training_learns(small_parts, task, metric, floor):
    cfg = _cfg(task)
    net = _net(cfg, task)
    res = fit(net, small_parts, task, cfg, torch.device("cpu"))
    net.load_state_dict(res.best_state)
    pred = predict(TaskModel(net, task), small_parts["test"].images)
    got = compute_metrics(task, small_parts["test"].targets(task).numpy(), pred)[metric]
    assert got > floor, f"{task} {metric} {got:.3f} on held-out faces"
    assert len(res.history) == 10 and res.best_epoch >= 1


def test_multitask_trains_every_head(small_parts):
    cfg = _cfg("gender", aux_tasks=("rating", "group"), epochs=1)
    net = _net(cfg, "gender")
    before = {k: v.clone() for k, v in net.heads.state_dict().items()}
    fit(net, small_parts, "gender", cfg, torch.device("cpu"))
    assert all(not torch.equal(before[k], v) for k, v in net.heads.state_dict().items())


@pytest.mark.slow
@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_after_interruption_equals_an_uninterrupted_run(small_parts, tmp_path, ema):
    cfg = _cfg("rating", epochs=4, dropout=0.2, ema=ema)
    whole = fit(_net(cfg, "rating"), small_parts, "rating", cfg, torch.device("cpu"), tmp_path / "a.pt")
    cut = fit(_net(cfg, "rating"), small_parts, "rating", cfg, torch.device("cpu"), tmp_path / "b.pt",
              stop_after=2)
    assert not cut.finished and len(cut.history) == 2
    resumed = fit(_net(cfg, "rating"), small_parts, "rating", cfg, torch.device("cpu"), tmp_path / "b.pt")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4] == [h["epoch"] for h in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    for k, v in whole.best_state.items():
        assert torch.equal(v, resumed.best_state[k]), k


def test_checkpoint_of_another_config_is_not_resumed(small_parts, tmp_path):
    cfg = _cfg("gender", epochs=1)
    fit(_net(cfg, "gender"), small_parts, "gender", cfg, torch.device("cpu"), tmp_path / "c.pt")
    other = dataclasses.replace(cfg, lr=cfg.lr / 2)
    res = fit(_net(other, "gender"), small_parts, "gender", other, torch.device("cpu"), tmp_path / "c.pt")
    assert [h["epoch"] for h in res.history] == [1]          # started over instead of "already done"


def test_early_stopping_stops_after_patience(small_parts):
    cfg = _cfg("gender", epochs=30, patience=2, lr=1e-9)    # nothing improves after epoch 1
    res = fit(_net(cfg, "gender"), small_parts, "gender", cfg, torch.device("cpu"))
    assert len(res.history) < 30 and len(res.history) - res.best_epoch == 2


def test_wrong_loss_for_task_is_refused(small_parts):
    cfg = _cfg("gender", loss="mse")
    with pytest.raises(ValueError, match="does not fit"):
        fit(_net(cfg, "gender"), small_parts, "gender", cfg, torch.device("cpu"))


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_finished_run_is_not_resumed_by_the_next_one(small_parts, tmp_path):
    cfg = _cfg("gender", epochs=2)
    fit(_net(cfg, "gender"), small_parts, "gender", cfg, torch.device("cpu"), tmp_path / "d.pt")
    again = fit(_net(cfg, "gender"), small_parts, "gender", cfg, torch.device("cpu"), tmp_path / "d.pt")
    assert [h["epoch"] for h in again.history] == [1, 2]     # trained again, not "already done"


def test_initial_weights_come_from_the_seed():
    from pipeline.train import init_model

    cfg = ModelConfig("convnet", (4, 8), 0.0, 16)
    a, b, c = init_model(cfg, ["gender"], 3), init_model(cfg, ["gender"], 3), init_model(cfg, ["gender"], 4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_ema_keeps_the_moving_average_not_the_last_weights(small_parts):
    cfg = _cfg("gender", epochs=2, patience=2, ema=0.5)
    net = _net(cfg, "gender")
    res = fit(net, small_parts, "gender", cfg, torch.device("cpu"))
    # the kept state is the average: it differs from the trained weights, and its BN statistics too
    differs = [k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.equal(v, res.best_state[k])]
    assert any("running_mean" in k for k in differs) and any(k.endswith("weight") for k in differs)
