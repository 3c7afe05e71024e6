"""pipeline/core/layers.py: the per-layer parameter table (formula, count, MACs)."""
import pytest
from torch import nn

from pipeline.core.layers import CountMismatch, layer_table, to_markdown
from pipeline.core.model import ModelConfig, build_model


def test_conv_row_shows_formula_macs_and_the_dense_layer_it_replaces():
    net = build_model(ModelConfig("course", (100, 100, 100), 0.0, 128), {"outputs": 10})
    conv1 = [r for r in layer_table(net, 128) if r.params][0]
    assert conv1.macs == 2 * 2 * 3 * 100 * 128 * 128
    assert conv1.dense_equivalent == (3 * 129 * 129 + 1) * 100 * 128 * 128   # input is the padded map
    md = to_markdown(layer_table(net, 128), "course")
    assert "| **total** | | | | **337,510** |" in md and "(2*2*3 + 1)*100 | 1,300 |" in md


def test_batch_norm_counts_scale_and_shift_only():
    net = build_model(ModelConfig("convnet", (4,), 0.0, 16), ["gender"])
    bn = [r for r in layer_table(net, 16) if r.kind == "BatchNorm2d"]
    assert [r.params for r in bn] == [8, 8] and bn[0].formula.startswith("2*4")


def test_a_layer_the_formulas_do_not_know_fails_loudly():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.PReLU(3)                          # has a parameter, no formula
            self.fc = nn.Linear(3 * 8 * 8, 2)

        def forward(self, x):
            return self.fc(self.p(x).flatten(1))

    with pytest.raises(CountMismatch, match="formula gives 0, module has 3"):
        layer_table(Odd(), 8)


def test_every_counted_layer_is_one_table_row():
    net = build_model(ModelConfig("convnet", (4,), 0.0, 16), ["gender"])
    md = to_markdown(layer_table(net, 16), "t")
    rows = [line for line in md.splitlines() if line.startswith("| features") or line.startswith("| heads")]
    assert len(rows) == 5 and all(r.count("|") == 8 for r in rows)      # 2 conv, 2 BN, 1 head
    assert "| 2*4 (scale, shift) | 8 | 0 | - |" in md
