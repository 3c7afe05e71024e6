"""CNNs for faces: the course's network and our own, as a trunk (`forward_features`) plus heads.

    model = build_model(ModelConfig(arch="convnet", ...), heads={"gender": 2, "rating": 1})
    out = model(x)          # x: (B, 3, S, S) -> {"gender": (B, 2) logits, "rating": (B,) score}

Heads: `gender` gives 2 logits (cross-entropy), `rating` one unbounded number (a regression head with
an L1/Huber/MSE loss), `group` 2 logits (an auxiliary task). A model with several heads shares one
trunk (multi-task training).

Why not the course's head: it predicted the 1-5 rating with a 10-way softmax, i.e. as ten unordered
classes - a rating of 4.9 was as wrong as 1.0 when the label was 5, and fractional mean ratings
(e.g. 3.42) had no class. A rating is a number: one linear output and a regression loss.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from pipeline.core.execution import Execution, Policy, for_inference, resolve, select_device
from pipeline.core.tasks import RATING_RANGE, TASKS

HEAD_OUTPUTS = {name: t.outputs for name, t in TASKS.items()}


@dataclass(frozen=True)
class ModelConfig:
    arch: str                  # course | convnet | resnet
    widths: tuple[int, ...]    # channels per stage (course: filters per conv, e.g. (100, 100, 100))
    dropout: float             # before the heads (ignored by course)
    image_size: int            # input side; the course head's size depends on it


def count_params(model: nn.Module) -> int:
    """The number of trainable parameters (weights and biases; BN running stats are buffers, not
    parameters). The one count used by the report, MLflow and the README."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class CourseCNN(nn.Module):
    """The course network: 3 x [Conv2d(100, 2x2, same) + ReLU + MaxPool 2x2] -> Flatten -> Linear.

    Parameters at 128x128x3 with k outputs: conv1 (2*2*3 + 1)*100 = 1300, conv2 and conv3
    (2*2*100 + 1)*100 = 40100 each, dense (16*16*100 + 1)*k = 25600k + k. For k = 10: 337,510.
    """

    def __init__(self, cfg: ModelConfig, heads: dict[str, int]):
        super().__init__()
        layers, c_in = [], 3
        for c_out in cfg.widths:
            # Keras' padding="same" for a 2x2 kernel: one zero row/column after, none before (explicit,
            # because torch's padding="same" copies the input for even kernels)
            layers += [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(c_in, c_out, 2), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        side = cfg.image_size // 2 ** len(cfg.widths)
        self.num_features = c_in * side * side          # 100 * 16 * 16 = 25600 at 128 px
        self.heads = nn.ModuleDict({k: nn.Linear(self.num_features, n) for k, n in heads.items()})

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)              # (B, 3, 128, 128) -> (B, 25600)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return _apply_heads(self.heads, self.forward_features(x))


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    # no conv bias: BN's shift makes it redundant (saves c_out parameters per conv)
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class ConvNet(nn.Module):
    """Ours: per stage [Conv3x3-BN-ReLU x 2 + MaxPool], then global average pooling and dropout.

    GAP makes the head independent of the input size and tiny (widths[-1] + 1 per output) - the
    course's flatten-dense layer holds 76 % of its parameters and overfits on a few thousand faces.
    """

    def __init__(self, cfg: ModelConfig, heads: dict[str, int]):
        super().__init__()
        self.features = self._make_features(cfg.widths)
        c_in = cfg.widths[-1]
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(cfg.dropout))
        self.num_features = c_in
        self.heads = nn.ModuleDict({k: nn.Linear(c_in, n) for k, n in heads.items()})

    @staticmethod
    def _make_features(widths: tuple[int, ...]) -> nn.Sequential:
        layers, c_in = [], 3
        for c_out in widths:
            layers += [*_conv_bn(c_in, c_out), *_conv_bn(c_out, c_out), nn.MaxPool2d(2)]
            c_in = c_out
        return nn.Sequential(*layers)                    # (B, 3, S, S) -> (B, widths[-1], S/2^n, S/2^n)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))               # (B, 3, S, S) -> (B, widths[-1])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return _apply_heads(self.heads, self.forward_features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 Conv-BN with an identity (or 1x1 strided) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(c_in, c_out, stride)[:3],
                                  nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet(ConvNet):
    """A small ResNet: stem Conv3x3(stride 2), then one BasicBlock per width (stride 2 after the first)."""

    @staticmethod
    def _make_features(widths: tuple[int, ...]) -> nn.Sequential:
        blocks, c_in = [*_conv_bn(3, widths[0], stride=2)], widths[0]
        for i, c_out in enumerate(widths):
            blocks.append(BasicBlock(c_in, c_out, stride=1 if i == 0 else 2))
            c_in = c_out
        return nn.Sequential(*blocks)                    # (B, 3, S, S) -> (B, widths[-1], S/2^n, S/2^n)


def _apply_heads(heads: nn.ModuleDict, feats: torch.Tensor) -> dict[str, torch.Tensor]:
    # The heads run in float32 even under bf16 autocast: they cost nothing (widths[-1] MACs per
    # output), and a bf16 rating has 8 significant bits - steps of 1/32 between 4 and 5.
    with torch.autocast(feats.device.type, enabled=False):
        feats = feats.float()
        out = {k: head(feats) for k, head in heads.items()}
    if "rating" in out:
        out["rating"] = out["rating"].squeeze(1)        # (B, 1) -> (B,)
    return out


ARCHS = {"course": CourseCNN, "convnet": ConvNet, "resnet": ResNet}


def build_model(cfg: ModelConfig, heads: list[str] | dict[str, int]) -> nn.Module:
    """Builds `cfg.arch` with one head per task name (outputs from HEAD_OUTPUTS unless given)."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose one of {sorted(ARCHS)}")
    if not isinstance(heads, dict):
        heads = {h: HEAD_OUTPUTS[h] for h in heads}
    return ARCHS[cfg.arch](cfg, heads)


class TaskModel(nn.Module):
    """One task's inference view of a (possibly multi-head) network: (B, 3, S, S) -> (B,).

    gender -> P(male), rating -> the predicted rating clipped to [1, 5]. This is what MLflow logs and the registry,
    evaluation and the service call, so all of them agree on what a model returns.
    """

    def __init__(self, net: nn.Module, task: str):
        super().__init__()
        self.net, self.task = net, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)[self.task].float()         # bf16 under autocast -> fp32 for softmax / clamp
        if self.task == "gender":
            return out.softmax(1)[:, 1]
        return out.clamp(*RATING_RANGE)       # ratings live on the 1-5 scale; clipping only reduces error


def predict(model: nn.Module, images, batch_size: int = 128, tta_flip: bool = False,
            policy: Policy | None = None):
    """Runs a TaskModel on uint8 photos (N, S, S, 3) -> float64 numpy (N,), optionally averaging
    each photo with its mirror image (test-time augmentation), under the execution policy (default:
    float32 NCHW on the CPU). The one inference call of train (validation), evaluate, the service and
    the benches.

    With flip averaging, a chunk of n photos and their mirrors run as one batch of 2n: one call
    instead of two, which on the CPU is ~10 % faster for a single photo (bench/serve.py)."""
    import numpy as np

    from pipeline.core.preprocess import to_tensor

    policy = policy or resolve(Execution(), torch.device("cpu"), threads=torch.get_num_threads())
    if getattr(model, "training", False):   # eval() walks every module: 0.3 ms a call, so only when needed
        with contextlib.suppress(NotImplementedError):   # a torch.export module (MLflow's pt2) is frozen in eval
            model.eval()
    out = []
    with torch.inference_mode(), policy.autocast():
        for i in range(0, len(images), batch_size):
            x = to_tensor(images[i:i + batch_size])                 # (n, 3, S, S)
            n = len(x)
            if tta_flip:
                x = torch.cat([x, x.flip(3)])                       # (2n, 3, S, S): photos, then mirrors
            y = model(policy.input(x)).float()
            if tta_flip:
                y = (y[:n] + y[n:]) / 2
            out.append(y.cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def make_bundle(net: nn.Module, mcfg: ModelConfig, heads: list[str], task: str, preprocess: dict,
                execution: dict, trained_on: dict) -> dict:
    """What a weights file holds: a plain NCHW float32 network and every fact needed to serve it
    (architecture, heads, crop contract, execution policy) and what it learnt from (`trained_on`:
    parts, photos, epochs). Moves `net` to the CPU in the default memory format."""
    net = net.cpu().to(memory_format=torch.contiguous_format)   # type: ignore[call-overload]  # torch stubs
    return {"state_dict": net.state_dict(), "model_config": asdict(mcfg), "heads": list(heads), "task": task,
            "preprocess": preprocess, "execution": execution, "trained_on": trained_on}


def load_bundle(path, map_location="cpu") -> tuple[nn.Module, dict]:
    """Loads what the train stage saved (`weights_only=True`: no pickled code runs) -> (net, bundle)."""
    bundle = torch.load(path, weights_only=True, map_location=map_location)
    cfg = bundle["model_config"]
    net = build_model(ModelConfig(**{**cfg, "widths": tuple(cfg["widths"])}), bundle["heads"])
    net.load_state_dict(bundle["state_dict"])
    return net.eval(), bundle


def inference_model(net: nn.Module, task: str, policy: Policy) -> TaskModel:
    """A trained network as evaluate and the service run it: one task's output, BN folded, frozen,
    in the policy's device and memory format (pipeline/core/execution.py)."""
    return TaskModel(for_inference(net, policy), task).eval()


def serving_model(path, task: str, execution: Execution | None = None, device: str = "auto",
                  workers: int = 1, threads: int = 0) -> tuple[TaskModel, Policy]:
    """A weights bundle -> its task's inference model and the policy it runs under on this machine.

    The one loader of evaluate and the service: `execution` is the bundle's own unless given (the
    service passes what package stored in the BentoML metadata, which is copied from the bundle);
    `workers` divides the cores between server processes; `threads` (> 0) says how many are this one's."""
    net, bundle = load_bundle(path)
    execution = execution or Execution.from_bundle(bundle.get("execution"))
    policy = resolve(execution, select_device(device), threads=threads, workers=workers)
    return inference_model(net, task, policy), policy
