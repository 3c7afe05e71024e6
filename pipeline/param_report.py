"""Parameter-count report: every layer's parameters as a formula with its numbers filled in.

    python -m pipeline.param_report --out reports/params

For each model in params.yaml (train.gender, train.rating) and the course's network as the course
wrote it (10 outputs on 128x128x3 faces), a per-layer table: output shape, the formula
(conv (kh*kw*c_in + 1)*c_out, dense (n_in + 1)*n_out, batch norm 2*C), parameters, multiply-
accumulates, and what a fully connected layer with the same input and output sizes would cost -
the course's point: a convolution shares one small kernel across all positions. The totals are
checked against `count_params` (sum of numel) and the stage fails when they differ.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.atomic import write_text
from pipeline.model import ModelConfig, build_model, count_params


@dataclass
class Row:
    layer: str
    kind: str
    output: str          # e.g. "100x64x64"
    formula: str         # e.g. "(2*2*3 + 1)*100"
    params: int
    macs: int            # multiply-accumulates per image
    dense_equivalent: int  # conv/dense: parameters of a Linear(in_numel -> out_numel); else 0


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
            raise AssertionError(f"{names[m]}: formula gives {n}, module has {own} parameters")
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
        raise AssertionError(f"layer table sums to {total}, count_params says {count_params(net)}")
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


def models_in_params(params) -> dict[str, tuple[ModelConfig, list[str]]]:
    """Every network the pipeline builds, plus the course reference network."""
    out = {}
    for task in ("gender", "rating"):
        c = getattr(params.train, task)
        out[f"{task}-{c.arch}"] = (ModelConfig(c.arch, c.widths, c.dropout, params.ingest.image_size),
                                   [task, *c.aux_tasks])
    ref = params.param_report
    out["course-reference"] = (ModelConfig("course", (100, 100, 100), 0.0, ref.reference_size),
                               {"outputs": ref.reference_outputs})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Per-layer parameter report of every model in params.yaml")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline import tracking
    from pipeline.config import load_params

    params = load_params(args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    md, summary = ["# Parameter counts, layer by layer", ""], {}
    try:
        for name, (cfg, heads) in models_in_params(params).items():
            net = build_model(cfg, heads)
            rows = layer_table(net, cfg.image_size)
            md.append(to_markdown(rows, f"{name}: {cfg.arch} {list(cfg.widths)} at {cfg.image_size}x{cfg.image_size}x3,"
                                        f" heads {heads}"))
            summary[name] = {"params": count_params(net), "macs": sum(r.macs for r in rows),
                             "layers": [asdict(r) for r in rows]}
    except AssertionError as e:
        sys.exit(f"param_report: FAILED - {e}")
    write_text(args.out / "params.md", "\n".join(md))
    write_text(args.out / "params.json", json.dumps(summary, indent=1) + "\n")
    for name, s in summary.items():
        print(f"param_report: {name:24s} {s['params']:>10,} parameters {s['macs']:>14,} MACs/image")
    with tracking.stage_run(params, "param_report", params.param_report):
        tracking.log_metrics({f"{n}.params": s["params"] for n, s in summary.items()})
        tracking.log_artifacts([args.out / "params.md", args.out / "params.json"], "param_report")


if __name__ == "__main__":
    main()
