"""pipeline/core/distributed.py and DDP in pipeline/core/fit.py: the batch shares by hand, the augmentation a
rank draws, 2 processes under torchrun against one process, and the train stage launching torchrun."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline.core import distributed
from pipeline.core.data import Augment, augment
from pipeline.core.distributed import World

from conftest import ROOT, TINY, copy_repo, free_port, run, venv_env


def test_shards_cover_the_batch_and_weights_restore_the_global_mean():
    # 10 rows on 3 ranks: 4 + 3 + 3; weights n_r * size / n = 1.2, 0.9, 0.9
    got = [distributed.shard(10, World(r, 3)) for r in range(3)]
    assert [(s.start, s.stop) for s, _ in got] == [(0, 4), (4, 7), (7, 10)]
    assert [w for _, w in got] == pytest.approx([1.2, 0.9, 0.9])
    # the average over ranks of weight * (rank's mean loss) is the batch mean
    losses = torch.arange(10.0)
    ddp = sum(w * losses[s].mean() for s, w in got) / 3
    assert ddp.item() == pytest.approx(losses.mean().item())
    # a batch of 1 on 2 ranks: rank 1 runs one row at weight 0 (it must still join the all-reduce)
    assert distributed.shard(1, World(0, 2)) == (slice(0, 1), 2.0)
    assert distributed.shard(1, World(1, 2)) == (slice(0, 1), 0.0)
    assert distributed.shard(7, World()) == (slice(None), 1.0)


def test_a_rank_augments_its_rows_as_one_process_augments_the_whole_batch():
    x = torch.randn(10, 3, 16, 16)
    cfg = Augment(flip=True, shift=0.1, brightness=0.2, contrast=0.2)
    whole = augment(x, cfg, torch.Generator().manual_seed(3))
    part = augment(x[4:7], cfg, torch.Generator().manual_seed(3), (10, slice(4, 7)))
    torch.testing.assert_close(part, whole[4:7], rtol=0, atol=0)


class _Sent(Exception):
    pass


def test_every_tensor_collective_runs_on_the_training_device(monkeypatch):
    """NCCL reduces CUDA tensors only: the loss mean and the metric broadcast must be built on the
    training device (here "meta", which exists without a GPU; the fake collective records it)."""
    seen = []

    def record(t, *a, **k):
        seen.append(t.device)
        raise _Sent

    monkeypatch.setattr(torch.distributed, "all_reduce", record)
    monkeypatch.setattr(torch.distributed, "broadcast", record)
    meta = torch.device("meta")
    for call in (lambda: distributed.mean(3.0, 2, World(0, 2), meta), lambda: distributed.broadcast(0.5, World(1, 2), meta)):
        with pytest.raises(_Sent):
            call()
    assert seen == [meta, meta]
    # fit.py reaches torch.distributed only through this module (so the above covers its collectives)
    fit_src = (ROOT / "pipeline/core/fit.py").read_text() + (ROOT / "pipeline/core/checkpoint.py").read_text()
    assert "torch.distributed." not in fit_src.replace("torch.distributed.run", "")


def test_a_cuda_group_has_a_gloo_backend_for_cpu_objects_and_nccl_for_cuda_tensors(monkeypatch):
    got = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: got.append(backend))
    monkeypatch.setenv("WORLD_SIZE", "2")
    distributed.init(torch.device("cuda", 0))
    distributed.init(torch.device("cpu"))
    assert got == ["cpu:gloo,cuda:nccl", "gloo"]


def test_more_processes_than_gpus_stop_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit, match=r"^train: 2 processes on this node but 1 GPU\(s\) visible: .*at most 1$"):
        distributed.check_devices(torch.device("cuda"), 2)
    distributed.check_devices(torch.device("cuda"), 1)
    distributed.check_devices(torch.device("cpu"), 8)          # CPU ranks share the cores (threads split)


def test_ranks_that_disagree_stop_every_rank_naming_the_odd_one(monkeypatch):
    monkeypatch.setattr(distributed, "gather", lambda v, w: ["ab12", "ab12", "cd34"])
    with pytest.raises(SystemExit, match="rank 2's run fingerprint is cd34, rank 0's is ab12"):
        distributed.agree("ab12", "run fingerprint", World(0, 3))
    monkeypatch.setattr(distributed, "gather", lambda v, w: ["ab12"] * 3)
    distributed.agree("ab12", "run fingerprint", World(0, 3))


def test_torchrun_argv_runs_the_module_standalone():
    argv = distributed.torchrun_argv(4, "pipeline.stages.train", ["--task", "gender"])
    assert argv[:2] == [sys.executable, "-m"] and argv[2] == "torch.distributed.run"
    assert "--standalone" in argv and "--nproc-per-node=4" in argv
    assert argv[-4:] == ["-m", "pipeline.stages.train", "--task", "gender"]


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains_with_the_same_global_batch(tmp_path):
    """97 photos in global batches of 32, 4 epochs, fp32, augmentation on. Without BatchNorm (the
    course network) 2 gloo processes give the single process's weights to float rounding (< 1e-5; the
    all-reduce sums in another order). With BatchNorm (convnet) each rank normalises its own half of
    the batch on CPU (torch has no CPU SyncBatchNorm): the loss curve stays within 3 %."""
    helper = str(ROOT / "tests/ddp_fit.py")
    run([sys.executable, helper, str(tmp_path / "one"), "course", "convnet"], ROOT)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", helper,
         str(tmp_path / "two"), "course", "convnet"], ROOT)
    for arch in ("course", "convnet"):
        one, two = (torch.load(tmp_path / d / f"{arch}.pt", weights_only=True) for d in ("one", "two"))
        assert (one["world"], two["world"]) == (1, 2)
        loss1, loss2 = ([h["train_loss"] for h in r["history"]] for r in (one, two))
        assert loss1[-1] < 0.6 * loss1[0], f"{arch} did not learn: {loss1}"
        if arch == "course":
            for k, v in one["state"].items():
                torch.testing.assert_close(two["state"][k], v, rtol=0, atol=1e-5)
            assert loss2 == pytest.approx(loss1, rel=1e-6)
        else:
            assert loss2 == pytest.approx(loss1, rel=0.03)


@pytest.mark.slow
@pytest.mark.integration
def test_dvc_repro_runs_the_train_stage_under_torchrun_and_only_rank_0_logs(tmp_path):
    repo = copy_repo(tmp_path, {**TINY, "train": {**TINY["train"], "nproc": 2}})
    out = run(["dvc", "repro", "train@gender"], repo)
    assert "train gender (2 processes)" in out
    assert (repo / "models/gender/model.pt").is_file()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["faces"], filter_string="tags.stage = 'train-gender'")
    assert len(runs) == 1 and runs["tags.processes"].tolist() == ["2"]
    assert json.loads((repo / "models/gender/run.json").read_text())["run_id"] == runs["run_id"][0]
    assert "Data and pipelines are up to date" in run(["dvc", "repro", "train@gender"], repo)
    p = subprocess.run(["dvc", "status", "train@gender"], cwd=repo, env=venv_env(), capture_output=True, text=True)
    assert p.returncode == 0 and "up to date" in p.stdout and "changed" not in p.stdout, p.stdout + p.stderr


def _nodes(tmp_path, out, env: dict | None = None, env_b: dict | None = None) -> list[subprocess.Popen]:
    """Two torchrun agents of one process each, as two nodes: own working folders, c10d rendezvous on
    127.0.0.1 (the first agent to bind hosts the store), checkpoints on each node's own disk."""
    port, helper, procs = free_port(), str(ROOT / "tests/ddp_fit.py"), []
    for node, extra in (("a", env or {}), ("b", {**(env or {}), **(env_b or {})})):
        cwd = tmp_path / f"node-{node}"
        cwd.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=faces-test",
               "--local-addr=127.0.0.1", "--max-restarts=0", helper, str(out), "course"]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env={**venv_env(), "DDP_FIT_CHECKPOINT": "1", **extra}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True))
    return procs


def _finish(procs, timeout=120) -> list[tuple[int, str]]:
    """(return code, output) of each node; a run that hangs (ranks out of step) is killed and fails."""
    try:
        return [(p.wait(timeout=timeout), p.stdout.read()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        subprocess.run(["pkill", "-9", "-f", "tests/ddp_fit.py"], check=False)   # the workers, in their own sessions


@pytest.mark.slow
def test_two_nodes_on_loopback_killed_and_resumed_train_what_one_node_trains(tmp_path):
    """Two nodes (one process each) train the course network; both are killed after epoch 3 (the
    checkpoint then holds epoch 2, on the disk of whichever node had rank 0), restarted, and finish.
    The other node's disk has no checkpoint: it resumes from the one its peer sends, so the weights
    equal an uninterrupted one-process run's (to the all-reduce's float rounding)."""
    run([sys.executable, str(ROOT / "tests/ddp_fit.py"), str(tmp_path / "one"), "course"], ROOT)
    out = tmp_path / "two"
    procs = _nodes(tmp_path, out, {"DDP_FIT_PAUSE": "3"})
    for p in procs:                                    # the pause is rank 0's; both nodes must be up
        assert p.poll() is None
    deadline = time.monotonic() + 180
    while not (out / "paused").exists():
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), _finish(procs, 5)
        time.sleep(0.2)
    for pid in [p.pid for p in procs] + [int((out / f"pid-{r}").read_text()) for r in (0, 1)]:
        os.killpg(pid, signal.SIGKILL)                 # a node lost: its agent and its worker
    _finish(procs)
    held = [d.name for d in (tmp_path / "node-a", tmp_path / "node-b") if (d / "course.ck.pt").exists()]
    assert len(held) == 1, held                        # rank 0's node alone wrote one
    assert torch.load(tmp_path / held[0] / "course.ck.pt", weights_only=True)["state"]["epoch"] == 2
    (out / "ran.txt").write_text("")
    results = _finish(_nodes(tmp_path, out))
    assert [rc for rc, _ in results] == [0, 0], results
    assert (out / "ran.txt").read_text().split() == ["3", "4"]    # resumed, not started over
    one, two = (torch.load(d / "course.pt", weights_only=True) for d in (tmp_path / "one", out))
    assert two["world"] == 2 and len(two["history"]) == 4
    for k, v in one["state"].items():
        torch.testing.assert_close(two["state"][k], v, rtol=0, atol=1e-5)
    assert [h["train_loss"] for h in two["history"]] == pytest.approx([h["train_loss"] for h in one["history"]],
                                                                     rel=1e-6)


@pytest.mark.slow
def test_a_node_with_other_params_stops_both_nodes_in_one_line(tmp_path):
    results = _finish(_nodes(tmp_path, tmp_path / "out", env_b={"DDP_FIT_LR": "0.02"}))
    assert all(rc != 0 for rc, _ in results), results
    for _, log in results:
        assert "run fingerprint (params, data, code, precision) is" in log and "every node must run the same" in log
