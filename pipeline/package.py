"""Package stage: the MLflow `champion` of each task -> the BentoML model store, ready to serve.

    python -m pipeline.package --out models/serving.json

For each task, takes `<experiment>-<source>-<task>@champion` from the MLflow registry, downloads the
weights bundle of its training run and saves it with `bentoml.models.create` as `<prefix>-<task>`,
with the preprocessing contract (image size, normalisation) and serving limits as metadata and the
MLflow model / version / run as labels. A champion that is already in the store is not saved again.
`serving.json` names the exact BentoML tags; `make serve` serves those.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from pipeline.preprocess import MEAN, STD

TASKS = ("gender", "rating")


def find_packaged(name: str, labels: dict[str, str]):
    """The BentoML model `name` whose labels include `labels`, or None."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        stored = bentoml.models.list(name)
    except NotFound:                      # no model of that name yet
        return None
    for m in stored:
        if all(m.info.labels.get(k) == v for k, v in labels.items()):
            return m
    return None


def save_bundle(name: str, bundle_path: Path, labels: dict[str, str], metadata: dict):
    """Stores one weights bundle (`model.pt`, loadable with weights_only=True) as a BentoML model."""
    import bentoml

    with bentoml.models.create(name, labels=labels, metadata=metadata) as bm:
        shutil.copy(bundle_path, bm.path_of("model.pt"))
    return bm


def package(params, task: str, workdir: Path) -> dict:
    """Puts one task's champion into the BentoML store (or finds it there) -> summary dict."""
    from pipeline import tracking

    name = f"{params.tracking.experiment}-{params.ingest.source}-{task}"
    champ = tracking.champion(params, name, "bundle/model.pt", workdir / task)
    labels = {"mlflow_model": name, "mlflow_version": str(champ["version"]), "mlflow_run": champ["run_id"],
              "source": params.ingest.source, "task": task}
    bento_name = f"{params.package.bento_prefix}-{task}"
    existing = find_packaged(bento_name, labels)
    if existing is not None:
        return {"tag": str(existing.tag), "created": False, **labels}
    bundle = torch.load(champ["path"], weights_only=True, map_location="cpu")
    cfg = params.package
    metadata = {"image_size": bundle["model_config"]["image_size"], "mean": list(MEAN), "std": list(STD),
                "arch": bundle["model_config"]["arch"], "heads": list(bundle["heads"]),
                "max_upload_bytes": int(cfg.max_upload_mb * 2**20), "max_pixels": cfg.max_pixels,
                "tta_flip": params.evaluate.tta_flip,       # serve exactly as evaluate scored it
                **{k: v for k, v in champ["tags"].items() if k.startswith("test_")}}
    bm = save_bundle(bento_name, Path(champ["path"]), labels, metadata)
    return {"tag": str(bm.tag), "created": True, **labels}


def main() -> None:
    ap = argparse.ArgumentParser(description="Package the champion models for BentoML")
    ap.add_argument("--out", required=True, type=Path, help="serving.json: the BentoML tags to serve")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    from pipeline import tracking
    from pipeline.config import load_params

    params = load_params(args.params)
    with tempfile.TemporaryDirectory() as tmp:
        summary = {task: package(params, task, Path(tmp)) for task in TASKS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    for task, s in summary.items():
        state = "saved" if s["created"] else "already in the store"
        print(f"package {task}: {s['mlflow_model']} v{s['mlflow_version']} -> BentoML {s['tag']} ({state})")
    with tracking.stage_run(params, "package", params.package):
        tracking.log_artifacts([args.out], "package")


if __name__ == "__main__":
    main()
