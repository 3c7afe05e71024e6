"""Package stage: the MLflow `champion` of each task -> the BentoML model store, ready to serve.

    python -m pipeline.stages.package --out models/serving.json

For each task, takes `<experiment>-<source>-<task>@champion` from the MLflow registry, downloads the
weights bundle of its training run (the refit on every photo, `final/final.pt`, when the run has one;
else the split model that evaluate scored) and saves it with `bentoml.models.create` as `<prefix>-<task>`,
with the preprocessing contract (image size, normalisation, crop: centre or face with the detector's
settings and version), the serving bounds (params.yaml `package`) and the sha256 of the weights as
metadata, and the MLflow model / version / run as labels.
A champion already in the store with the same metadata is not saved again; store entries that a
killed run left half-written are removed first (`sweep_broken`).
`serving.json` names the exact BentoML tags; `make serve` serves those.

    python -m pipeline.stages.package --out models/serving.json --archives models/bento
    python -m pipeline.stages.package --import models/bento        # `make pull` on another machine

`--archives` also writes each champion as `<name>.bentomodel` (`bentoml models export`, BentoML's
own archive format): a DVC output, so `dvc push` / `dvc pull` carry the served models to another
machine, whose BentoML store `--import` fills from them (the Dockerfile imports them the same way).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from pipeline.core.atomic import sha256_file, write_text
from pipeline.core.execution import Execution, policy_dict
from pipeline.core.preprocess import MEAN, STD, crop_contract
from pipeline.core.tasks import SERVED

FINAL = "final/final.pt"                 # the refit's weights in the split model's MLflow run


def _store_models_dir() -> Path:
    """The BentoML model store's folder (BENTOML_HOME/models): BentoML has no public call for it."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get()) / "models"


def sweep_broken(name: str) -> list[str]:
    """Removes store entries of `name` that a killed `package` left half-written.

    BentoML copies a new model into the store folder by folder, not atomically; an entry without a
    readable model.yaml makes every `bentoml.models.list(name)` fail, and one whose model.pt does not
    match its recorded sha256 would be served. -> the tags removed."""
    import bentoml

    removed = []
    folder = _store_models_dir() / name
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not entry.is_dir():
            continue                                   # the `latest` pointer file
        tag = f"{name}:{entry.name}"
        try:
            model = bentoml.models.get(tag)
            recorded = model.info.metadata.get("sha256")
            intact = recorded is None or (Path(model.path_of("model.pt")).is_file()
                                          and sha256_file(model.path_of("model.pt")) == recorded)
        except Exception:  # noqa: BLE001 - a half-written model.yaml raises YAML, OS or BentoML errors
            intact = False
        if not intact:
            shutil.rmtree(entry)
            removed.append(tag)
            print(f"package: removed {tag}, a half-written or corrupt store entry")
    return removed


def _unhashed(metadata: dict) -> dict:
    """Metadata without the weights hash: `sweep_broken` has checked the stored file against it, and
    the MLflow labels (model, version, run) already say which weights these are."""
    return {k: v for k, v in metadata.items() if k != "sha256"}


def find_packaged(name: str, labels: dict[str, str], metadata: dict | None = None):
    """The intact BentoML model `name` whose labels include `labels` (and, when given, whose
    metadata equals `metadata` apart from the weights hash: same serving bounds), or None."""
    import bentoml
    from bentoml.exceptions import NotFound

    sweep_broken(name)
    try:
        stored = bentoml.models.list(name)
    except NotFound:                      # no model of that name yet
        return None
    for m in stored:
        if all(m.info.labels.get(k) == v for k, v in labels.items()) and (
                metadata is None or _unhashed(m.info.metadata) == _unhashed(metadata)):
            return m
    return None


def save_bundle(name: str, bundle_path: Path, labels: dict[str, str], metadata: dict):
    """Stores one weights bundle (`model.pt`, loadable with weights_only=True) as a BentoML model,
    with its sha256 in the metadata (the service checks it at start-up)."""
    import bentoml

    metadata = {**metadata, "sha256": sha256_file(bundle_path)}
    with bentoml.models.create(name, labels=labels, metadata=metadata) as bm:
        shutil.copy(bundle_path, bm.path_of("model.pt"))
    return bentoml.models.get(bm.tag)


def serving_metadata(params, bundle: dict) -> dict:
    """What the service must know to serve a model exactly as it was trained and evaluated."""
    bounds = {k: v for k, v in dataclasses.asdict(params.package).items() if k != "bento_prefix"}
    return {"image_size": bundle["model_config"]["image_size"], "mean": list(MEAN), "std": list(STD),
            "arch": bundle["model_config"]["arch"], "heads": list(bundle["heads"]),
            "tta_flip": params.evaluate.tta_flip,        # serve exactly as evaluate scored it
            # crop as ingest did for this model (bundles from before the face step: centre)
            "preprocess": bundle.get("preprocess", crop_contract("centre")),
            # how evaluate ran it (pipeline/core/execution.py; bundles from before the policy: fp32 NCHW)
            "execution": policy_dict(Execution.from_bundle(bundle.get("execution"))),
            # what the weights learnt from: the split's train part, or every photo (a refit)
            "trained_on": bundle.get("trained_on", {"parts": ["train"]}),
            "serving": bounds}


def package(params, task: str, workdir: Path) -> dict:
    """Puts one task's champion into the BentoML store (or finds it there) -> summary dict."""
    from pipeline import tracking

    name = f"{params.tracking.experiment}-{params.ingest.dataset}-{task}"
    # the refit on every photo when the champion's run has one (pipeline/stages/refit.py), else the split model
    champ = tracking.champion(params, name, [FINAL, "bundle/model.pt"], workdir / task)
    weights = f"refit-{sha256_file(champ['path'])[:12]}" if champ["artifact"] == FINAL else "split"
    labels = {"mlflow_model": name, "mlflow_version": str(champ["version"]), "mlflow_run": champ["run_id"],
              "source": params.ingest.dataset, "task": task, "weights": weights}
    bento_name = f"{params.package.bento_prefix}-{task}"
    bundle = torch.load(champ["path"], weights_only=True, map_location="cpu")
    metadata = {**serving_metadata(params, bundle),
                **{k: v for k, v in champ["tags"].items() if k.startswith("test_")}}
    existing = find_packaged(bento_name, labels, metadata)
    if existing is not None:
        return {"tag": str(existing.tag), "created": False, **labels}
    bm = save_bundle(bento_name, Path(champ["path"]), labels, metadata)
    return {"tag": str(bm.tag), "created": True, **labels}


def export_archives(tags: list[str], dest: Path) -> list[Path]:
    """dest's `<name>.bentomodel` archives, replaced by those of `tags` (each written under a temporary
    name and renamed: a killed export leaves no half archive)."""
    import bentoml

    dest.mkdir(parents=True, exist_ok=True)
    for child in dest.glob("*.bentomodel"):
        child.unlink()
    out = []
    for tag in tags:
        name = bentoml.models.get(tag).tag.name
        # an absolute path ending in .bentomodel: BentoML resolves others against / or appends the suffix
        tmp = dest.resolve() / f".{name}.tmp.bentomodel"
        bentoml.models.export_model(tag, str(tmp))
        out.append(tmp.rename(dest / f"{name}.bentomodel"))
    return out


def import_archives(folder: Path) -> list[str]:
    """Every `*.bentomodel` in folder into this machine's BentoML store (skipping models it has)
    -> the tags imported."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    done = []
    for archive in sorted(folder.glob("*.bentomodel")):
        try:
            done.append(str(bentoml.models.import_model(str(archive.resolve())).tag))
        except BentoMLException as e:
            if "already exists" not in str(e):
                raise
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description="Package the champion models for BentoML")
    ap.add_argument("--out", type=Path, help="serving.json: the BentoML tags to serve")
    ap.add_argument("--archives", type=Path, help="also export the champions as .bentomodel files here")
    ap.add_argument("--import", dest="import_from", type=Path, help="only import the archives of this folder")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    if args.import_from:
        print("package: imported", *import_archives(args.import_from) or ["nothing (the store has them)"])
        return
    if args.out is None:
        ap.error("--out is required")
    from pipeline import tracking
    from pipeline.core.config import load_params

    params = load_params(args.params)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            summary = {task: package(params, task, Path(tmp)) for task in SERVED}
        except LookupError as e:
            sys.exit(f"package: {e}")
    if args.archives:
        export_archives([s["tag"] for s in summary.values()], args.archives)
    write_text(args.out, json.dumps(summary, indent=2) + "\n")
    for task, s in summary.items():
        state = "saved" if s["created"] else "already in the store"
        print(f"package {task}: {s['mlflow_model']} v{s['mlflow_version']} -> BentoML {s['tag']} ({state})")
    with tracking.stage_run(params, "package", params.package):
        tracking.log_artifacts([args.out], "package")


if __name__ == "__main__":
    main()
