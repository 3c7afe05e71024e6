"""pipeline/core/checkpoint.py: which checkpoint the ranks resume from, and each rank's own RNG streams.
The collectives are replaced by what the other rank would contribute (the real ones: test_distributed's
two-node run)."""
import pytest
import torch

from pipeline.core import checkpoint, distributed
from pipeline.core.distributed import World


def _parts(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    return {"net": net, "opt": opt, "sched": sched, "gen": torch.Generator().manual_seed(seed), "ema": None}


def _write(path, epoch: int, fp: str = "fp", world: int = 2, finished: bool = False) -> None:
    rngs = [checkpoint.rng_state(torch.device("cpu"))] * world
    torch.save({"fingerprint": fp, "model": {}, "opt": {}, "sched": {}, "gen": None, "rng": rngs,
                "state": {"epoch": epoch}, "finished": finished, "ema": None}, path)


def _as_rank(monkeypatch, rank: int, peers_epoch: int, peers_ck: dict | None):
    """This process plays `rank` of 2; the other rank reports `peers_epoch` and would send `peers_ck`."""
    sent = []

    def gather(obj, w):
        return [obj, peers_epoch] if rank == 0 else [peers_epoch, obj]

    def send(obj, src, w):
        sent.append(src)
        return obj if src == rank else peers_ck

    monkeypatch.setattr(distributed, "gather", gather)
    monkeypatch.setattr(distributed, "send", send)
    return sent


def test_a_rank_without_a_checkpoint_resumes_from_the_one_its_peer_holds(tmp_path, monkeypatch):
    # rank 0 landed on a node whose disk has none (a new rendezvous gave rank 0 to another node)
    peer = {"state": {"epoch": 3}}
    sent = _as_rank(monkeypatch, 0, 3, peer)
    assert checkpoint.agreed(tmp_path / "none.pt", "fp", World(0, 2)) is peer and sent == [1]


def test_the_newest_usable_checkpoint_wins_and_a_stale_or_foreign_one_is_ignored(tmp_path, monkeypatch):
    mine = tmp_path / "ck.pt"
    _write(mine, epoch=2)
    sent = _as_rank(monkeypatch, 1, 5, {"state": {"epoch": 5}})
    assert checkpoint.agreed(mine, "fp", World(1, 2))["state"]["epoch"] == 5 and sent == [0]
    sent = _as_rank(monkeypatch, 1, 1, None)
    assert checkpoint.agreed(mine, "fp", World(1, 2))["state"]["epoch"] == 2 and sent == [1]
    for kwargs in ({"fp": "other"}, {"finished": True}, {"world": 3}):   # not this run, done, or another world size
        _write(mine, epoch=2, **kwargs)
        _as_rank(monkeypatch, 1, -1, None)
        assert checkpoint.agreed(mine, "fp", World(1, 2)) is None, kwargs


def test_every_rank_gets_its_own_random_stream_back(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    torch.manual_seed(10)
    rank0 = checkpoint.rng_state(cpu)
    torch.manual_seed(11)
    rank1 = checkpoint.rng_state(cpu)
    monkeypatch.setattr(distributed, "gather", lambda obj, w: [rank0, rank1])
    path, parts = tmp_path / "ck.pt", _parts()
    checkpoint.save(path, "fp", parts, {"epoch": 1}, World(0, 2), cpu)
    ck = checkpoint.read(path)
    torch.manual_seed(99)
    checkpoint.restore(ck, _parts(1), World(1, 2), cpu)
    after_restore = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(after_restore, torch.rand(3))            # rank 1's stream, not rank 0's
    torch.manual_seed(10)
    assert not torch.equal(after_restore, torch.rand(3))


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "gather", lambda obj, w: [obj, obj])
    checkpoint.save(tmp_path / "ck.pt", "fp", _parts(), {"epoch": 1}, World(1, 2), torch.device("cpu"))
    assert not (tmp_path / "ck.pt").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 half a zip", None])
def test_an_unreadable_or_foreign_file_reads_as_none(tmp_path, content):
    path = tmp_path / "ck.pt"
    if content is None:
        torch.save({"weights": torch.zeros(1)}, path)      # a torch file, but not a checkpoint
    else:
        path.write_bytes(content)
    assert checkpoint.read(path) is None
