"""pipeline/core/execution.py: the execution policy is detected, not assumed, and its inference
transformations (BN folding, flip as one batch, bf16) keep the numbers."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.execution import Execution, bf16_native, cpu_threads, fold_batchnorm, for_inference, resolve
from pipeline.core.model import ModelConfig, TaskModel, build_model, inference_model, predict

CPU = torch.device("cpu")


def _photos(n: int = 12, seed: int = 0) -> np.ndarray:
    """Photos that differ in colour and brightness gradient, not only in noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 32)[None, :, None, None] * rng.uniform(-120, 120, (n, 1, 1, 3))
    base = rng.uniform(40, 215, (n, 1, 1, 3)) + ramp + rng.normal(0, 20, (n, 32, 32, 3))
    return base.clip(0, 255).astype(np.uint8)


def _trained_like(arch: str = "convnet", seed: int = 0) -> torch.nn.Module:
    """A network whose BN layers hold the statistics of real activations and non-trivial affine
    terms, as after training (fresh BN is the identity, and folding it would prove nothing): one
    pass over photos in train mode with cumulative averages. Its outputs then vary with the photo."""
    from pipeline.core.preprocess import to_tensor

    torch.manual_seed(seed)
    net = build_model(ModelConfig(arch, (8, 16, 32), 0.0, 32), ["gender", "rating"])
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    with torch.no_grad():
        net.train()(to_tensor(_photos(64, seed=99)))
        net.heads["rating"].weight.mul_(4)
        net.heads["gender"].weight.mul_(8)
        net.heads["rating"].bias.fill_(3.0)              # ratings inside [1, 5]: the clamp hides little
    return net.eval()


def test_bf16_is_native_exactly_where_the_cpu_says_so():
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    assert bf16_native(CPU) == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_auto_resolves_to_bf16_only_where_native_and_fp32_always_forces_full_precision():
    auto = resolve(Execution("auto", True), CPU)
    assert auto.dtype == (torch.bfloat16 if bf16_native(CPU) else torch.float32)
    assert auto.memory_format == torch.channels_last
    fp32 = resolve(Execution("fp32", False), CPU)
    assert fp32.dtype == torch.float32 and fp32.memory_format == torch.contiguous_format
    assert resolve(Execution("bf16", True), CPU).dtype == torch.bfloat16       # asked for: emulated if need be
    assert fp32.describe() == {"device": "cpu", "precision": "fp32", "memory_format": "nchw",
                               "threads": cpu_threads()}


def test_a_bundle_without_a_policy_runs_as_it_was_trained_fp32_nchw():
    assert Execution.from_bundle(None) == Execution.from_bundle({}) == Execution("fp32", False)
    assert Execution.from_bundle({"precision": "auto", "channels_last": True}) == Execution("auto", True)


def test_threads_split_the_cores_between_server_workers():
    cores = os.cpu_count() or 1
    assert cpu_threads() == cores and cpu_threads(3) == 3
    assert cpu_threads(0, workers=2) == max(1, cores // 2) and cpu_threads(0, workers=10 * cores) == 1


@pytest.mark.parametrize("arch", ["convnet", "resnet", "course"])
def test_folding_batchnorm_keeps_the_outputs_and_leaves_the_original_alone(arch):
    net = _trained_like(arch)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    bns = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())   # noqa: E731
    assert bns(folded) == 0 and bns(net) == (0 if arch == "course" else bns(net))
    if arch != "course":
        assert bns(net) > 0                               # the original keeps its BN layers
    from pipeline.core.preprocess import to_tensor

    x = to_tensor(_photos(6))
    with torch.no_grad():
        ref, got = net(x), folded(x)
    for head in ref:            # fp32 rounding, against outputs that spread over ~1 (rating) / ~4 (logits)
        torch.testing.assert_close(got[head], ref[head], rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_inference_model_is_frozen_and_channels_last():
    policy = resolve(Execution("fp32", True), CPU)
    net = for_inference(_trained_like(), policy)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_fp32_policy_path_equals_the_plain_eval_model_and_flip_as_one_batch_equals_two_calls():
    net, photos = _trained_like(), _photos()
    plain = TaskModel(net, "rating")
    policy = resolve(Execution("fp32", True), CPU)
    fast = inference_model(net, "rating", policy)
    ref = (predict(plain, photos) + predict(plain, photos[:, :, ::-1].copy())) / 2     # two NCHW calls
    np.testing.assert_allclose(predict(fast, photos, tta_flip=True, policy=policy), ref, rtol=1e-5, atol=1e-5)


def test_bf16_scores_stay_close_to_fp32_and_do_not_depend_on_the_batch():
    """The tolerance the README states for bf16 inference: |bf16 - fp32| <= 0.02 rating points and
    0.01 probability here, on outputs that vary with the photo; and a photo's score is the same alone
    as in a batch (the service batches differently from evaluate)."""
    net, photos = _trained_like(), _photos(16)
    fp32, bf16 = resolve(Execution("fp32", False), CPU), resolve(Execution("bf16", True), CPU)
    for task, tol in (("rating", 0.02), ("gender", 0.01)):
        ref = predict(inference_model(net, task, fp32), photos, tta_flip=True, policy=fp32)
        model = inference_model(net, task, bf16)
        batched = predict(model, photos, tta_flip=True, policy=bf16)
        alone = np.concatenate([predict(model, photos[i:i + 1], tta_flip=True, policy=bf16) for i in range(16)])
        assert np.ptp(ref) > 10 * tol, "outputs must vary with the photo for this test to mean anything"
        assert np.abs(batched - ref).max() <= tol, task
        np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_under_bf16_the_rating_keeps_float32_resolution():
    """The heads run in float32: a bf16 head would round every rating to 8 significant bits (steps
    of 1/64 between 2 and 4), and the API would answer numbers like 3.796875."""
    net, photos = _trained_like(), _photos(32)
    bf16 = resolve(Execution("bf16", True), CPU)
    got = predict(inference_model(net, "rating", bf16), photos, policy=bf16)
    as_bf16 = torch.tensor(got).to(torch.bfloat16).double().numpy()
    assert (got != as_bf16).mean() > 0.9


@pytest.mark.parametrize(("files", "want"), [
    ({"cpu.max": "150000 100000\n"}, 2),                     # cgroup v2: 1.5 CPUs -> 2 threads
    ({"cpu.max": "max 100000\n"}, None),                     # no quota: the affinity's count
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),   # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_available_cpus_follow_the_cgroup_quota_not_the_nodes_core_count(tmp_path, files, want):
    from pipeline.core.execution import available_cpus

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    mine = len(os.sched_getaffinity(0))
    assert available_cpus(str(tmp_path)) == (min(want, mine) if want else mine)
