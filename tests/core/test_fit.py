import dataclasses

import pytest
import torch

from pipeline.core.config import load_params
from pipeline.core.execution import Execution, resolve, select_device
from pipeline.core.fit import fit
from pipeline.core.metrics import compute_metrics
from pipeline.core.model import ModelConfig, TaskModel, build_model, predict

from conftest import ROOT

# the default execution policy (bf16 + channels_last where the CPU has bf16): the resume and kill
# tests below hold bit for bit under it
CPU = resolve(Execution("auto", True), torch.device("cpu"), threads=1)


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
    res = fit(net, small_parts, task, cfg, CPU)
    net.load_state_dict(res.best_state)
    pred = predict(TaskModel(net, task), small_parts["test"].images)
    got = compute_metrics(task, small_parts["test"].targets(task).numpy(), pred)[metric]
    assert got > floor, f"{task} {metric} {got:.3f} on held-out faces"
    assert len(res.history) == 10 and res.best_epoch >= 1


def test_multitask_trains_every_head(small_parts):
    cfg = _cfg("gender", aux_tasks=("rating", "group"), epochs=1)
    net = _net(cfg, "gender")
    before = {k: v.clone() for k, v in net.heads.state_dict().items()}
    fit(net, small_parts, "gender", cfg, CPU)
    assert all(not torch.equal(before[k], v) for k, v in net.heads.state_dict().items())


@pytest.mark.slow
@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_after_interruption_equals_an_uninterrupted_run(small_parts, tmp_path, ema):
    cfg = _cfg("rating", epochs=4, dropout=0.2, ema=ema)
    whole = fit(_net(cfg, "rating"), small_parts, "rating", cfg, CPU, tmp_path / "a.pt")
    cut = fit(_net(cfg, "rating"), small_parts, "rating", cfg, CPU, tmp_path / "b.pt",
              stop_after=2)
    assert not cut.finished and len(cut.history) == 2
    resumed = fit(_net(cfg, "rating"), small_parts, "rating", cfg, CPU, tmp_path / "b.pt")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4] == [h["epoch"] for h in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    for k, v in whole.best_state.items():
        assert torch.equal(v, resumed.best_state[k]), k


def test_checkpoint_of_another_config_is_not_resumed(small_parts, tmp_path):
    cfg = _cfg("gender", epochs=1)
    fit(_net(cfg, "gender"), small_parts, "gender", cfg, CPU, tmp_path / "c.pt")
    other = dataclasses.replace(cfg, lr=cfg.lr / 2)
    res = fit(_net(other, "gender"), small_parts, "gender", other, CPU, tmp_path / "c.pt")
    assert [h["epoch"] for h in res.history] == [1]          # started over instead of "already done"


def test_a_checkpoint_from_other_starting_weights_is_not_resumed(small_parts, tmp_path):
    cfg = _cfg("gender", epochs=2)
    fit(_net(cfg, "gender"), small_parts, "gender", cfg, CPU, tmp_path / "c.pt", stop_after=1)
    res = fit(_net(cfg, "gender"), small_parts, "gender", cfg, CPU, tmp_path / "c.pt", origin="split:abc")
    assert [h["epoch"] for h in res.history] == [1, 2]       # a refit from the split model starts over
    cut = fit(_net(cfg, "gender"), small_parts, "gender", cfg, CPU, tmp_path / "d.pt", stop_after=1, origin="split:abc")
    res = fit(_net(cfg, "gender"), small_parts, "gender", cfg, CPU, tmp_path / "d.pt", origin="split:abc")
    assert len(cut.history) == 1 and [h["epoch"] for h in res.history] == [1, 2]   # the same origin resumes


def test_val_every_validates_every_kth_and_the_last_epoch_and_trains_the_same_weights(small_parts):
    cfg = _cfg("rating", epochs=5, select="last", ema=0.9)
    every = fit(_net(cfg, "rating"), small_parts, "rating", cfg, CPU)
    sparse = fit(_net(cfg, "rating"), small_parts, "rating", dataclasses.replace(cfg, val_every=2), CPU)
    assert [h["val_pearson"] is not None for h in sparse.history] == [False, True, False, True, True]
    assert all("val_pearson" in h for h in sparse.history)          # null, not missing: DVC plots need the key
    assert sparse.best_metric == every.best_metric == every.history[-1]["val_pearson"]
    for k, v in every.best_state.items():
        assert torch.equal(v, sparse.best_state[k]), k              # validation changes no weight


def test_progressive_resizing_trains_small_first_and_validates_at_full_size(small_parts):
    cfg = _cfg("rating", epochs=3, small_size=16, small_epochs=2)
    net, seen = _net(cfg, "rating"), []
    net.register_forward_pre_hook(lambda m, args: seen.append((m.training, args[0].shape[-1])))
    res = fit(net, small_parts, "rating", cfg, CPU)
    trained = [s for t, s in seen if t]
    per_epoch = len(trained) // 3
    assert trained == [16] * (2 * per_epoch) + [32] * per_epoch     # two shrunk epochs, then the full size
    assert {s for t, s in seen if not t} == {32}                    # validation sees what evaluate sees
    assert [h["train_px"] for h in res.history] == [16, 16, 32]     # in the history and MLflow
    off = fit(_net(cfg, "rating"), small_parts, "rating", dataclasses.replace(cfg, small_size=0, small_epochs=0), CPU)
    assert res.history[0]["train_loss"] != off.history[0]["train_loss"]
    seen.clear()
    fit(net, small_parts, "rating", dataclasses.replace(cfg, epochs=2, small_epochs=5), CPU)   # more than there are
    assert [s for t, s in seen if t] == [16] * per_epoch + [32] * per_epoch                  # the last: full size


def test_early_stopping_stops_after_patience(small_parts):
    cfg = _cfg("gender", epochs=30, patience=2, lr=1e-9)    # nothing improves after epoch 1
    res = fit(_net(cfg, "gender"), small_parts, "gender", cfg, CPU)
    assert len(res.history) < 30 and len(res.history) - res.best_epoch == 2


def test_wrong_loss_for_task_is_refused(small_parts):
    cfg = _cfg("gender", loss="mse")
    with pytest.raises(ValueError, match="does not fit"):
        fit(_net(cfg, "gender"), small_parts, "gender", cfg, CPU)


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_finished_run_is_not_resumed_by_the_next_one(small_parts, tmp_path):
    cfg = _cfg("gender", epochs=2)
    fit(_net(cfg, "gender"), small_parts, "gender", cfg, CPU, tmp_path / "d.pt")
    again = fit(_net(cfg, "gender"), small_parts, "gender", cfg, CPU, tmp_path / "d.pt")
    assert [h["epoch"] for h in again.history] == [1, 2]     # trained again, not "already done"


def test_initial_weights_come_from_the_seed():
    from pipeline.core.fit import init_model

    cfg = ModelConfig("convnet", (4, 8), 0.0, 16)
    a, b, c = init_model(cfg, ["gender"], 3), init_model(cfg, ["gender"], 3), init_model(cfg, ["gender"], 4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))


def test_ema_keeps_the_moving_average_not_the_last_weights(small_parts):
    cfg = _cfg("gender", epochs=2, patience=2, ema=0.5)
    net = _net(cfg, "gender")
    res = fit(net, small_parts, "gender", cfg, CPU)
    # the kept state is the average: it differs from the trained weights, and its BN statistics too
    differs = [k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.equal(v, res.best_state[k])]
    assert any("running_mean" in k for k in differs) and any(k.endswith("weight") for k in differs)


# A training process killed with SIGKILL at the given point. `step:N`: at the N-th optimizer step of
# this process; `save:N`: in the middle of its N-th torch.save (half the bytes written and synced).
KILL_DRIVER = r'''
import io, os, pickle, signal, sys
import torch
from pipeline.core import fit as train
kill_at, ck, out, inputs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
parts, cfg = pickle.load(open(inputs, "rb"))
torch.set_num_threads(1)
what, n, count = kill_at.split(":")[0], int(kill_at.split(":")[-1] or 0), [0]
if what == "step":
    step = torch.optim.AdamW.step
    def killing_step(self, *a, **k):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, *a, **k)
    torch.optim.AdamW.step = killing_step
elif what == "save":
    save = torch.save
    def killing_save(obj, f, *a, **k):
        count[0] += 1
        if count[0] == n:
            buf = io.BytesIO(); save(obj, buf); data = buf.getvalue()
            with open(f, "wb") as fh:
                fh.write(data[: len(data) // 2]); fh.flush(); os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, f, *a, **k)
    torch.save = killing_save
torch.manual_seed(0)
net = train.build_model(train.ModelConfig("convnet", cfg.widths, cfg.dropout, 32), ["rating"])
from pipeline.core.execution import Execution, resolve
policy = resolve(Execution("auto", True), torch.device("cpu"), threads=1)
res = train.fit(net, parts, "rating", cfg, policy, __import__("pathlib").Path(ck))
buf = io.BytesIO(); torch.serialization.save(res.best_state, buf); open(out, "wb").write(buf.getvalue())
'''


@pytest.mark.slow
def test_killed_at_any_point_incl_mid_checkpoint_save_a_rerun_ends_with_the_uninterrupted_weights(
        small_parts, tmp_path):
    import pickle
    import subprocess
    import sys

    from conftest import venv_env

    cfg = _cfg("rating", epochs=3, dropout=0.2)
    whole = fit(_net(cfg, "rating"), small_parts, "rating", cfg, CPU, tmp_path / "whole.pt")
    (tmp_path / "in.pkl").write_bytes(pickle.dumps((small_parts, cfg)))
    ck, out = tmp_path / "ck.pt", tmp_path / "best.pt"
    steps = -(-len(small_parts["train"]) // cfg.batch_size)            # optimizer steps per epoch
    # mid-epoch 1; mid-save of epoch 1's checkpoint (nothing to resume: starts over); mid-epoch 2
    # after a resume from epoch 1; mid-save of epoch 2's checkpoint (epoch 1's survives)
    for point in ("step:3", "save:1", f"step:{steps + 2}", "save:2"):
        p = subprocess.run([sys.executable, "-c", KILL_DRIVER, point, str(ck), str(out), str(tmp_path / "in.pkl")],
                           cwd=ROOT, env=venv_env(), capture_output=True, text=True, timeout=300)
        assert p.returncode == -9, f"{point}: {p.returncode}\n{p.stderr[-2000:]}"
        assert not out.exists()
    assert not list(tmp_path.glob(".ck.pt.tmp-*")) or ck.is_file()      # a stray temp file at most
    p = subprocess.run([sys.executable, "-c", KILL_DRIVER, "none:", str(ck), str(out), str(tmp_path / "in.pkl")],
                       cwd=ROOT, env=venv_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    resumed = torch.load(out, weights_only=True)
    for k, v in whole.best_state.items():
        assert torch.equal(v, resumed[k]), k


def test_an_unreadable_checkpoint_is_reported_and_training_starts_over(small_parts, tmp_path, capsys):
    cfg = _cfg("gender", epochs=1)
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"PK\x03\x04 half a zip file")                 # what a non-atomic save killed mid-way left
    res = fit(_net(cfg, "gender"), small_parts, "gender", cfg, CPU, ck)
    assert [h["epoch"] for h in res.history] == [1]
    assert "is unreadable" in capsys.readouterr().err
    assert torch.load(ck, weights_only=True)["finished"]          # replaced by a good one


def test_select_last_keeps_the_last_epoch_not_the_best(small_parts):
    cfg = _cfg("rating", epochs=3, select="last", ema=0.0)
    net = _net(cfg, "rating")
    res = fit(net, small_parts, "rating", cfg, CPU)
    assert res.best_epoch == 3 and len(res.history) == 3
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in res.best_state.items())   # the trained weights
    assert res.best_metric == res.history[-1]["val_pearson"]


def test_without_a_val_part_nothing_is_validated_and_the_last_epoch_is_kept(small_parts):
    cfg = _cfg("gender", epochs=2, select="best")
    net = _net(cfg, "gender")
    res = fit(net, {"train": small_parts["train"]}, "gender", cfg, CPU)
    assert res.best_epoch == 2 and all("val_accuracy" not in h for h in res.history)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in res.best_state.items())


def test_a_nan_validation_metric_never_keeps_the_initial_weights(small_parts, monkeypatch):
    from pipeline.core import fit as fit_module

    # a constant prediction has no Pearson correlation: NaN in the first epochs, numbers later
    scores = iter([float("nan"), float("nan"), 0.3, 0.2])
    monkeypatch.setattr(fit_module, "compute_metrics", lambda task, y, p: {"pearson": next(scores)})
    cfg = _cfg("rating", epochs=4)
    net = _net(cfg, "rating")
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    res = fit(net, small_parts, "rating", cfg, CPU)
    assert res.best_epoch == 3 and res.best_metric == 0.3          # a number beats NaN; NaN beats nothing
    assert not all(torch.equal(initial[k], v) for k, v in res.best_state.items())


def test_all_nan_validation_keeps_the_first_trained_epoch(small_parts, monkeypatch):
    from pipeline.core import fit as fit_module

    monkeypatch.setattr(fit_module, "compute_metrics", lambda task, y, p: {"pearson": float("nan")})
    cfg = _cfg("rating", epochs=2)
    res = fit(_net(cfg, "rating"), small_parts, "rating", cfg, CPU)
    assert res.best_epoch == 1


def test_an_undefined_validation_metric_is_printed_as_such_not_as_nan(capsys):
    """Early EMA weights can score every validation photo the same: Pearson is then undefined (NaN);
    the epoch line says so in words instead of an alarming 'val pearson nan'."""
    from pipeline.core.fit import _report

    record = {"epoch": 4, "train_loss": 0.5, "seconds": 1.0}
    _report("rating", record, float("nan"), kept=False, on_epoch=None)
    _report("rating", {**record, "epoch": 5}, 0.6, kept=True, on_epoch=None)
    nan_line, ok_line = capsys.readouterr().out.splitlines()
    assert "nan" not in nan_line and "val pearson undefined (the same prediction for every photo" in nan_line
    assert "val pearson 0.6000" in ok_line and ok_line.endswith("*kept")
