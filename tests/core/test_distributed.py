"""pipeline/core/distributed.py and DDP in pipeline/core/fit.py: the batch shares by hand, the augmentation a
rank draws, 2 processes under torchrun against one process, and the train stage launching torchrun."""
import json
import subprocess
import sys

import pytest
import torch

from pipeline.core import distributed
from pipeline.core.data import Augment, augment
from pipeline.core.distributed import World

from conftest import ROOT, TINY, copy_repo, run, venv_env


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
