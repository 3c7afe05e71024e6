"""pipeline/stages/train.py: the stage's own decisions (its training loop is tests/core/test_fit.py, the
stage end to end tests/test_pipeline.py)."""
import sys

import pytest
import torch
import yaml

from pipeline.core import distributed
from pipeline.stages import train

from conftest import ROOT


def test_an_unknown_task_is_refused_before_anything_loads(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train", "--task", "age", "--data", "d", "--split", "s", "--out", "o"])
    with pytest.raises(SystemExit) as e:
        train.main()
    assert e.value.code == 2 and "invalid choice: 'age'" in capsys.readouterr().err


def test_nproc_above_one_re_executes_the_stage_under_torchrun(monkeypatch, tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["nproc"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for var in ("TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    argv = ["--task", "gender", "--data", "d", "--split", "s", "--out", "o", "--params", str(tmp_path / "params.yaml")]
    monkeypatch.setattr(sys, "argv", ["train", *argv])
    seen = []

    def execv(path, args):
        seen.append(args)
        raise SystemExit(0)                                # execv does not return

    monkeypatch.setattr(train.os, "execv", execv)
    with pytest.raises(SystemExit):
        train.main()
    assert seen == [distributed.torchrun_argv(2, "pipeline.stages.train", argv)]
    assert "--nproc-per-node=2" in seen[0] and seen[0][-len(argv):] == argv


def test_one_process_trains_on_the_device_asked_for():
    assert train._device("cpu", distributed.World()) == torch.device("cpu")
