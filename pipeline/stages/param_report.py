"""Parameter-count report: every layer's parameters as a formula with its numbers filled in.

    python -m pipeline.stages.param_report --out reports/params

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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_text
from pipeline.core.layers import CountMismatch, layer_table, to_markdown
from pipeline.core.model import ModelConfig, build_model, count_params
from pipeline.core.tasks import SERVED


def models_in_params(params) -> dict[str, tuple[ModelConfig, list[str] | dict[str, int]]]:
    """Every network the pipeline builds (its heads), plus the course reference network (its outputs)."""
    out: dict[str, tuple[ModelConfig, list[str] | dict[str, int]]] = {}
    for task in SERVED:
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
    from pipeline.core.config import load_params

    params = load_params(args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    md = ["# Parameter counts, layer by layer", ""]
    summary: dict[str, dict[str, Any]] = {}
    try:
        for name, (cfg, heads) in models_in_params(params).items():
            net = build_model(cfg, heads)
            rows = layer_table(net, cfg.image_size)
            md.append(to_markdown(rows, f"{name}: {cfg.arch} {list(cfg.widths)} at {cfg.image_size}x{cfg.image_size}x3,"
                                        f" heads {heads}"))
            summary[name] = {"params": count_params(net), "macs": sum(r.macs for r in rows),
                             "layers": [asdict(r) for r in rows]}
    except CountMismatch as e:
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
