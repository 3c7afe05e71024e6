"""The execution policy: how a network runs on this machine, the same way in train, evaluate, the
service and the benches.

    policy = resolve(Execution("auto", True), torch.device("cpu"))   # -> bf16 + channels_last here
    with policy.autocast():
        out = net(policy.input(x))

What it decides, and why (measured with bench/train.py and bench/serve.py, docs/speed.md):
- **precision**: `auto` computes convolutions in bfloat16 under autocast where the hardware has it
  natively (CPU: AVX512_BF16 or AMX; CUDA: compute capability >= 8.0) and in float32 elsewhere - on a
  CPU without native bf16, oneDNN emulates it and is slower than fp32. Weights, optimizer state and
  the losses stay float32 (autocast, not `.half()`), so training needs no loss scaling. `fp32` forces
  full precision everywhere (params.yaml `train.precision`).
- **memory format**: channels_last (NHWC), the layout oneDNN's and cuDNN's fast convolutions use;
  NCHW input makes every convolution reorder its input and output.
- **inference**: BatchNorm folded into the convolution before it (one pass over the activations
  fewer), `torch.inference_mode`, and flip averaging as one batch of 2N, not two calls of N.
- **threads**: all cores for a single process, cores / workers for the service's worker processes.
- **TF32**: off on CUDA (`Policy.apply`): fp32 is fp32 on every device; bf16 autocast is the fast path.

The requested policy (`Execution`) is stored in the model bundle by train and in the BentoML
metadata by package; evaluate and the service resolve it on their own machine. A bundle without one
was trained and scored in float32 NCHW, and is run that way.
"""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class Execution:
    """What a model asks for (params.yaml `train.precision` / `train.channels_last`); travels with it."""
    precision: Precision = "fp32"
    channels_last: bool = False

    @classmethod
    def from_bundle(cls, stored: dict | None) -> Execution:
        """The bundle's / metadata's `execution` dict; none stored: the float32 NCHW of older models."""
        return cls(**stored) if stored else cls()


def bf16_native(device: torch.device) -> bool:
    """True where bfloat16 matrix arithmetic runs in hardware (detected, never assumed)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


@dataclass(frozen=True)
class Policy:
    """A resolved execution policy: what this process actually does."""
    device: torch.device
    dtype: torch.dtype              # autocast compute dtype; float32 = autocast off
    channels_last: bool
    threads: int                    # torch intra-op threads (CPU)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> on the device, in the policy's memory format."""
        return x.to(self.device, memory_format=self.memory_format, non_blocking=True)

    def model(self, net: nn.Module) -> nn.Module:
        """Moves a network to the device and memory format (in place, the same Parameter objects:
        an optimizer built before or after still holds them)."""
        return net.to(self.device, memory_format=self.memory_format)   # type: ignore[call-overload]  # torch stubs

    def apply(self) -> None:
        """The process-wide settings: CPU threads; on CUDA no TF32 (its 10-bit mantissa would make
        `fp32` mean something else on a GPU than on a CPU; where bf16 is native, `auto` uses bf16
        autocast instead, and on GPUs without it TF32 does not exist either)."""
        if self.device.type == "cpu" and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    def describe(self) -> dict[str, str | int]:
        """For logs, MLflow tags and the resume fingerprint."""
        return {"device": self.device.type, "precision": "bf16" if self.dtype == torch.bfloat16 else "fp32",
                "memory_format": "channels_last" if self.channels_last else "nchw", "threads": self.threads}


def select_device(pref: str) -> torch.device:
    """auto -> cuda when available, else cpu."""
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def available_cpus(root: str = "/sys/fs/cgroup") -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a container's
    `--cpus`, a pod's CPU limit). os.cpu_count() is the node's count, which in a pod on a 64-core node
    would start 64 threads on a 2-core quota: all of them throttled."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for path, parse in ((f"{root}/cpu.max", lambda t: t.split()),                       # cgroup v2
                        (f"{root}/cpu/cpu.cfs_quota_us", lambda t: [t.strip(), _read(f"{root}/cpu/cpu.cfs_period_us")])):
        try:
            quota, period = parse(_read(path))
        except (OSError, ValueError):
            continue
        if quota not in ("max", "-1") and int(period) > 0:
            return max(1, min(cpus, -(-int(quota) // int(period))))
        break
    return cpus


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def cpu_threads(threads: int = 0, workers: int = 1) -> int:
    """0 -> this process's share of the cores it may use: all of them, or cores / workers for a server
    whose worker processes each run a model (more would oversubscribe the cores)."""
    return threads or max(1, available_cpus() // max(1, workers))


def resolve(execution: Execution, device: torch.device, threads: int = 0, workers: int = 1) -> Policy:
    """The requested policy on this machine: bf16 only where it is native (`auto`), or where it is
    asked for explicitly (`bf16`: emulated where not native - slow, but the same numbers)."""
    bf16 = execution.precision == "bf16" or (execution.precision == "auto" and bf16_native(device))
    return Policy(device, torch.bfloat16 if bf16 else torch.float32, execution.channels_last,
                  cpu_threads(threads, workers))


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of `net` (in eval mode) in which every BatchNorm2d that directly follows a Conv2d in an
    nn.Sequential is folded into that convolution's weights and bias and replaced by Identity.

    Inference only: folding uses the running statistics, so the copy computes what `net.eval()`
    does (to float rounding) with one pass over the activations less per convolution."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(net).eval()
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return net


def for_inference(net: nn.Module, policy: Policy) -> nn.Module:
    """The network as evaluate and the service run it: BN folded, eval mode, frozen, on the policy's
    device and memory format. (Casting the weights to bf16 once instead of autocast's cast per call
    was measured: no difference in time or numbers, so autocast it is, as in training.)"""
    net = policy.model(fold_batchnorm(net))
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def policy_dict(execution: Execution) -> dict:
    """For the bundle and the BentoML metadata (basic types only)."""
    return asdict(execution)
