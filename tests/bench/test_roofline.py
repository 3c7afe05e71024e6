"""bench/roofline.py: the attainable GMAC/s of this CPU, per precision, with its kind named."""
import sys

import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from pipeline.core.execution import bf16_native  # noqa: E402

import roofline  # noqa: E402


def test_the_roofline_measures_fp32_and_bf16_only_where_native():
    roof = roofline.measure(threads=1, seconds=1)
    assert roof.fp32 > 1 and roof.threads == 1
    assert (roof.bf16 is not None) == bf16_native(torch.device("cpu"))
    assert set(roof.detail) >= {"matmul fp32", "conv fp32"}
    assert roof.peak("bf16") == (roof.bf16 or roof.fp32) and roof.peak("fp32") == roof.fp32
    kind = roofline.cpu_kind()
    assert "cores" in kind and any(isa in kind for isa in ("AVX512_BF16", "AMX", "AVX2", "AVX-512", "no AVX2"))
    assert roof.line().startswith(f"roofline: {kind}")


def test_a_figure_without_native_bf16_is_judged_against_fp32():
    roof = roofline.Roofline("x", 2, fp32=50.0, bf16=None, detail={})
    assert roof.peak("bf16") == 50.0 and "bf16 not native" in roof.line()
