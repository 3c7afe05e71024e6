"""Per-layer parameter table: each layer's output shape, parameter formula with its numbers filled in,
parameters, multiply-accumulates and the dense layer it replaces.

    rows = layer_table(net, image_size); print(to_markdown(rows, "gender model"))

A core module: the param_report stage writes these tables for every model in params.yaml, and the
evaluate stage writes one for the model it scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.core.model import count_params


@dataclass
class Row:
    layer: str
    kind: str
    output: str          # e.g. "100x64x64"
    formula: str         # e.g. "(2*2*3 + 1)*100"
    params: int
    macs: int            # multiply-accumulates per image
    dense_equivalent: int  # conv/dense: parameters of a Linear(in_numel -> out_numel); else 0


class CountMismatch(ValueError):
    """A layer's parameter formula disagrees with the module (the report would explain wrong numbers)."""

def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape[1:]))


def _formula(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[str, int, int]:
    """-> (formula, parameters by formula, MACs) for one leaf module."""
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        cin = m.in_channels // m.groups
        per_out = f"{kh}*{kw}*{cin}" + (" + 1" if m.bias is not None else "")
        n = (kh * kw * cin + (m.bias is not None)) * m.out_channels
        return f"({per_out})*{m.out_channels}", n, kh * kw * cin * y[0].numel()
    if isinstance(m, nn.Linear):
        b = m.bias is not None
        return (f"({m.in_features} + 1)*{m.out_features}" if b else f"{m.in_features}*{m.out_features}",
                (m.in_features + b) * m.out_features, m.in_features * m.out_features)
    if isinstance(m, nn.BatchNorm2d):
        return f"2*{m.num_features} (scale, shift)", 2 * m.num_features, 0
    return "0", 0, 0


def layer_table(net: nn.Module, image_size: int) -> list[Row]:
    """Runs one (1, 3, S, S) forward pass with hooks on every leaf module and tabulates it."""
    rows: list[Row] = []
    names = {m: n for n, m in net.named_modules()}

    def hook(m, inp, out):
        x, y = inp[0], out
        formula, n, macs = _formula(m, x, y)
        own = sum(p.numel() for p in m.parameters(recurse=False))
        if n != own:
            raise CountMismatch(f"{names[m]}: formula gives {n}, module has {own} parameters")
        dense = (x[0].numel() + 1) * y[0].numel() if isinstance(m, (nn.Conv2d, nn.Linear)) else 0
        rows.append(Row(names[m], type(m).__name__, _shape(y), formula, n, macs, dense))

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
    total = sum(r.params for r in rows)
    if total != count_params(net):
        raise CountMismatch(f"layer table sums to {total}, count_params says {count_params(net)}")
    return rows


def to_markdown(rows: list[Row], title: str) -> str:
    """A Markdown table with totals (layers without parameters and MACs are folded into the next)."""
    lines = [f"### {title}", "", "| layer | type | output | parameters (formula) | parameters | MACs | "
             "dense layer, same in/out |", "|---|---|---|---|--:|--:|--:|"]
    for r in rows:
        if r.params or r.macs:
            dense = f"{r.dense_equivalent:,}" if r.dense_equivalent else "-"
            lines.append(f"| {r.layer} | {r.kind} | {r.output} | {r.formula} | {r.params:,} | {r.macs:,} | {dense} |")
    total, macs = sum(r.params for r in rows), sum(r.macs for r in rows)
    lines += [f"| **total** | | | | **{total:,}** | **{macs:,}** | |", ""]
    return "\n".join(lines) + "\n"
