"""The machine's roofline: the multiply-accumulates per second this CPU can attain, so that every training
and serving figure can be printed as a fraction of it, with the CPU kind named.

    python bench/roofline.py [--threads 0]        (bench/train.py and bench/serve.py print it too)

Measures, on the threads training uses (all cores), the best of several timed repeats of:
- a 2048 x 2048 x 2048 matmul (fp32; bf16 too where the CPU has it natively): the GEMM peak;
- a 128 -> 256 channel 3 x 3 convolution on a batch of 16 at 56 x 56, channels-last (fp32, and bf16
  under autocast where native): what oneDNN's convolutions reach on a layer of the profile's size.
The attainable figure of a precision is the larger of the two. A CPU's kind: its model name and
whether it has AVX512_BF16 / AMX (bf16 in hardware) or only AVX2 (fp32), as the execution policy
decides (pipeline/core/execution.py).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.execution import available_cpus, bf16_native


def cpu_kind() -> str:
    """e.g. 'AMD EPYC 9B14, 2 cores, AVX512_BF16' or '..., AVX2 only (fp32)'."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cpu._is_amx_tile_supported():
        isa = "AMX (bf16)"
    elif torch.cpu._is_avx512_bf16_supported():
        isa = "AVX512_BF16"
    elif torch.cpu._is_avx512_supported():
        isa = "AVX-512 without bf16 (fp32)"
    else:
        isa = "AVX2 only (fp32)" if torch.cpu._is_avx2_supported() else "no AVX2"
    return f"{model}, {available_cpus()} cores, {isa}"


def _best_rate(fn, macs: float, repeats: int, seconds: float) -> float:
    """GMAC/s of the fastest of `repeats` runs of fn (after one warm-up), within `seconds` of timing."""
    fn()
    best, deadline = float("inf"), time.perf_counter() + seconds
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return macs / best / 1e9


def matmul_rate(dtype: torch.dtype, n: int = 2048, repeats: int = 5, seconds: float = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return _best_rate(lambda: torch.mm(a, b), n ** 3, repeats, seconds)


def conv_rate(bf16: bool, batch: int = 16, size: int = 56, cin: int = 128, cout: int = 256, repeats: int = 5,
              seconds: float = 10) -> float:
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(batch, cin, size, size).to(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            conv(x)

    return _best_rate(run, batch * size * size * cout * cin * 9, repeats, seconds)


@dataclass(frozen=True)
class Roofline:
    kind: str
    threads: int
    fp32: float                      # attainable GMAC/s
    bf16: float | None               # None where bf16 is not native (oneDNN would emulate it: slower than fp32)
    detail: dict

    def peak(self, precision: str) -> float:
        """The attainable GMAC/s of the precision a figure ran in ("bf16" or "fp32")."""
        return self.bf16 if precision == "bf16" and self.bf16 else self.fp32

    def line(self) -> str:
        bf16 = f", bf16 {self.bf16:.0f}" if self.bf16 else ", bf16 not native"
        return (f"roofline: {self.kind}; {self.threads} threads: fp32 {self.fp32:.0f} GMAC/s{bf16} "
                f"(matmul 2048^3 / conv 128->256 3x3 56px: " + ", ".join(f"{k} {v:.0f}" for k, v in self.detail.items())
                + ")")


def measure(threads: int = 0, seconds: float = 10) -> Roofline:
    """The roofline on `threads` torch threads (0: every core this process may use)."""
    threads = threads or available_cpus()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        detail = {"matmul fp32": matmul_rate(torch.float32, seconds=seconds),
                  "conv fp32": conv_rate(False, seconds=seconds)}
        native = bf16_native(torch.device("cpu"))
        if native:
            detail["matmul bf16"] = matmul_rate(torch.bfloat16, seconds=seconds)
            detail["conv bf16"] = conv_rate(True, seconds=seconds)
    finally:
        torch.set_num_threads(before)
    fp32 = max(detail["matmul fp32"], detail["conv fp32"])
    bf16 = max(detail["matmul bf16"], detail["conv bf16"]) if native else None
    return Roofline(cpu_kind(), threads, fp32, bf16, detail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0)
    print(measure(ap.parse_args().threads).line())


if __name__ == "__main__":
    main()
