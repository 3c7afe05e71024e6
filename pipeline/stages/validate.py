"""Validate stage: a Great Expectations suite per source over the combined metadata and image array.

    python -m pipeline.stages.validate --data data/ingested --out reports/gx

Each source of `ingest.sources` is validated on its own rows with its own rating scale and the groups
its reader can say, and the labels are checked against what its file names (SCUT) or folders
(MEBeauty) say. Writes `<out>/result.json` (the GX validation results, per source),
`<out>/summary.json` (DVC metrics: overall and per source) and `<out>/data_docs/<source>/` (GX data
docs, open `index.html`). Exits non-zero with a readable list of the failed expectations and their
row counts when the data breaks a suite.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.atomic import write_text
from pipeline.core.sources import NAME_GROUPS, SourceConfig, name_says
from pipeline.core.tasks import GROUPS


def expectation_frame(meta: pd.DataFrame, image_shape: tuple[int, ...], reader: str = "scut") -> pd.DataFrame:
    """Adds the columns the suite checks: what the file name (or folder) says, the array's shape, 0/1
    female. `filename` may carry its `<source>/` key prefix."""
    frame = meta.copy()
    names = frame["filename"].str.split("/", n=1).str[-1] if "source" in frame else frame["filename"]
    parsed = [name_says(reader, n) or (None, None) for n in names]
    frame["name_gender"] = [p[0] for p in parsed]
    frame["name_group"] = [p[1] for p in parsed]
    frame["is_female"] = (frame["gender"] == "f").astype(float)
    frame["array_rows"] = image_shape[0]
    frame["array_height"], frame["array_width"], frame["array_channels"] = image_shape[1:4]
    return frame


def build_expectations(image_size: int, female_fraction: tuple[float, float], n_rows: int,
                       source: SourceConfig | None = None) -> list:
    """The suite: one expectation per data contract the later stages rely on; `source` sets the rating
    scale and the groups its reader knows (default: SCUT's 1-5, Asian / Caucasian)."""
    import great_expectations.expectations as gxe

    scale = source.scale if source else (1.0, 5.0)
    groups = sorted(GROUPS if source and source.reader == "mebeauty" else set(NAME_GROUPS.values()))
    not_null = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in
                ("filename", "gender", "group", "rating", "sha256")]
    return [
        *not_null,
        gxe.ExpectColumnValuesToBeUnique(column="filename"),
        gxe.ExpectColumnValuesToBeBetween(column="rating", min_value=scale[0], max_value=scale[1]),
        gxe.ExpectColumnValuesToBeInSet(column="gender", value_set=["f", "m"]),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="gender", column_B="name_gender"),
        gxe.ExpectColumnValuesToBeInSet(column="group", value_set=groups),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="group", column_B="name_group"),
        gxe.ExpectColumnValuesToBeBetween(column="array_height", min_value=image_size, max_value=image_size),
        gxe.ExpectColumnValuesToBeBetween(column="array_width", min_value=image_size, max_value=image_size),
        gxe.ExpectColumnValuesToBeBetween(column="array_channels", min_value=3, max_value=3),
        gxe.ExpectColumnValuesToBeBetween(column="array_rows", min_value=n_rows, max_value=n_rows),
        gxe.ExpectColumnMeanToBeBetween(column="is_female", min_value=female_fraction[0],
                                        max_value=female_fraction[1]),
    ]


def run_suite(frame: pd.DataFrame, expectations: list, docs_dir: Path | None = None) -> dict:
    """Validates `frame` in a throw-away GX file context; optionally copies the data docs out.

    Returns the validation result as a JSON-able dict (GX's own format).
    """
    import great_expectations as gx

    with tempfile.TemporaryDirectory() as tmp:
        context = gx.get_context(mode="file", project_root_dir=tmp)
        from great_expectations.data_context.types.base import ProgressBarsConfig
        context.variables.progress_bars = ProgressBarsConfig(globally=False)   # no per-metric bars in logs
        batch = context.data_sources.add_pandas("faces").add_dataframe_asset("ingested") \
            .add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name="ingested_faces", expectations=expectations))
        vd = context.validation_definitions.add(gx.ValidationDefinition(name="ingested", data=batch, suite=suite))
        actions: list = [gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if docs_dir else []
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name="ingest_check", validation_definitions=[vd], actions=actions,
            result_format={"result_format": "SUMMARY"}))
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        if docs_dir:
            site = Path(tmp) / "gx" / "uncommitted" / "data_docs" / "local_site"
            shutil.rmtree(docs_dir, ignore_errors=True)
            shutil.copytree(site, docs_dir)
        (only,) = result.run_results.values()
        return only.to_json_dict()


def failures(result: dict) -> list[dict]:
    """-> [{'expectation', 'column', 'unexpected'}] for each failed expectation."""
    out = []
    for r in result["results"]:
        if r["success"]:
            continue
        cfg = r["expectation_config"]
        kw = cfg["kwargs"]
        column = kw.get("column") or f"{kw.get('column_A')}={kw.get('column_B')}"
        res = r.get("result") or {}
        out.append({"expectation": cfg["type"], "column": column,
                    "unexpected": res.get("unexpected_count", res.get("observed_value"))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Validate data/ingested with Great Expectations")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline import tracking
    from pipeline.core.config import load_params

    params = load_params(args.params)
    meta = pd.read_parquet(args.data / "meta.parquet")
    images = np.load(args.data / "images.npy", mmap_mode="r")
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "data_docs", ignore_errors=True)
    results, per = {}, {}
    for src in params.ingest.sources:
        rows = meta[meta["source"] == src.name]
        # the array's row count is checked once, on the first source (it holds every source's rows)
        frame = expectation_frame(rows, (len(meta), *images.shape[1:]), src.reader)
        expectations = build_expectations(params.ingest.image_size, params.validate.female_fraction, len(meta), src)
        results[src.name] = run_suite(frame, expectations, args.out / "data_docs" / src.name)
        failed_here = failures(results[src.name])
        per[src.name] = {"success": results[src.name]["success"], "rows": len(rows), "failed": len(failed_here),
                         "evaluated": results[src.name]["statistics"]["evaluated_expectations"]}
    failed = [{**f, "source": n} for n, r in results.items() for f in failures(r)]
    evaluated = sum(p["evaluated"] for p in per.values())
    summary = {"success": all(p["success"] for p in per.values()), "evaluated": evaluated,
               "failed": len(failed), "rows": len(meta), "failures": failed, "sources": per}
    write_text(args.out / "result.json", json.dumps(results, indent=1, default=str) + "\n")
    write_text(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    with tracking.stage_run(params, "validate", params.validate):
        tracking.log_metrics({"expectations": evaluated, "failed": len(failed), "rows": len(meta)}
                             | {f"{n}_failed": p["failed"] for n, p in per.items()})
        tracking.log_artifacts([args.out / "result.json", args.out / "summary.json"], "validate")
    rows = ", ".join(f"{n} {p['rows']}" for n, p in per.items())
    print(f"validate: {evaluated - len(failed)}/{evaluated} expectations met on {len(meta)} rows ({rows}); "
          f"data docs: {args.out / 'data_docs'}/<source>/index.html")
    if failed:
        lines = [f"  FAILED {f['source']}: {f['expectation']} on {f['column']}: {f['unexpected']} unexpected"
                 for f in failed]
        sys.exit("validate: the ingested data breaks the suite\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
