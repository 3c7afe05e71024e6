"""service/forward.py: the served networks' call on a batch, chunked, the networks at once where a
worker runs one torch thread."""
import threading

import numpy as np
import pytest
import torch

from pipeline.core.execution import Policy
from pipeline.core.model import ModelConfig, TaskModel, build_model, predict
from service.forward import AT_ONCE, Forward, pow2_chunks


def cpu_policy(threads: int) -> Policy:
    return Policy(torch.device("cpu"), torch.float32, True, threads)


def models(size: int = 16) -> dict[str, TaskModel]:
    torch.manual_seed(0)
    nets = {t: build_model(ModelConfig("convnet", (4, 8), 0.0, size), [t]) for t in ("gender", "rating")}
    with torch.no_grad():                      # random weights: ratings inside 1-5, not all clamped to 1
        nets["rating"].heads["rating"].bias.fill_(3.0)
        nets["rating"].heads["rating"].weight.mul_(20.0)
    return {t: TaskModel(net, t).eval() for t, net in nets.items()}


@pytest.mark.parametrize("n", [1, 2, 3, 37, 63, 64])
def test_model_batches_run_as_power_of_two_chunks_in_order(n):
    chunks = pow2_chunks(n)
    assert [a for a, _ in chunks] == [0, *[b for _, b in chunks[:-1]]] and chunks[-1][1] == n
    sizes = [b - a for a, b in chunks]
    assert all(s & (s - 1) == 0 for s in sizes) and sizes == sorted(sizes, reverse=True)


def test_the_networks_run_at_once_only_on_one_cpu_thread_per_worker():
    nets = models()
    assert Forward(nets, ("gender", "rating"), cpu_policy(1), True).side is not None
    assert Forward(nets, ("gender", "rating"), cpu_policy(2), True).side is None     # would oversubscribe
    assert Forward(nets, ("gender",), cpu_policy(1), True).side is None
    gpu = Policy(torch.device("cuda"), torch.float32, True, 1)
    assert Forward(nets, ("gender", "rating"), gpu, True).side is None


@pytest.mark.parametrize(("threads", "n"), [(1, 2), (1, 5), (2, 5)])     # at once, and one after the other
def test_rows_are_each_photos_outputs_in_task_order_as_evaluate_computes_them(threads, n):
    nets = models()
    photos = list(np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8))
    rows = Forward(nets, ("gender", "rating"), cpu_policy(threads), True)(photos)
    want = {t: predict(m, np.stack(photos), tta_flip=True) for t, m in nets.items()}
    assert np.allclose(rows, np.stack([want["gender"], want["rating"]], axis=1), atol=1e-5)
    assert all(len({round(r[i], 6) for r in rows}) == n for i in (0, 1))   # each photo its own answers


class Recorded(torch.nn.Module):
    """A network that notes the thread it ran in (and fails where told to)."""

    def __init__(self, net: torch.nn.Module, seen: list, fail: bool = False):
        super().__init__()
        self.net, self.seen, self.fail = net, seen, fail

    def forward(self, x):
        self.seen.append(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("side network failed")
        return self.net(x)


@pytest.mark.parametrize("n", [1, AT_ONCE, AT_ONCE + 1, 8])
def test_a_small_batch_runs_the_last_network_in_the_side_thread_a_large_one_does_not(n):
    nets, seen = models(), {"gender": [], "rating": []}
    fwd = Forward({t: Recorded(m, seen[t]) for t, m in nets.items()}, ("gender", "rating"), cpu_policy(1), True)
    rows = fwd([np.zeros((16, 16, 3), np.uint8)] * n)
    assert len(rows) == n and set(seen["gender"]) == {threading.current_thread().name}
    side = all(name.startswith("model-side") for name in seen["rating"])
    assert side == (n <= AT_ONCE), seen        # under load (larger batches) both in the model thread


def test_the_side_networks_error_reaches_the_caller():
    nets, seen = models(), []
    fwd = Forward({**nets, "rating": Recorded(nets["rating"], seen, fail=True)}, ("gender", "rating"),
                  cpu_policy(1), True)
    with pytest.raises(RuntimeError, match="side network failed"):
        fwd([np.zeros((16, 16, 3), np.uint8)])
    assert seen and seen[0].startswith("model-side")
