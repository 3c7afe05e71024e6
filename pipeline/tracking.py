"""The MLflow adapter: all MLflow calls of the project live here; stages call these helpers and never
import mlflow. What wins a promotion is decided in pipeline/core/promotion.py (a declared dependency of
the stages that promote), not here.

Each DVC stage opens one run with `stage_run(...)`: the backend and experiment come from
params.yaml (`tracking`), the stage's own params are logged flattened, and the run is tagged with
the stage, the git commit and the hash of the ingested data as recorded in dvc.lock, so a run can
be traced back to the exact code and data that produced it.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config import Params, as_flat_dict
from pipeline.core.promotion import ALIAS, beats, fit_description

# No analytics traffic from any tool of the stack (this also covers child processes): the repository's one list
TELEMETRY_OFF = dict(line.split("=", 1) for line in (Path(__file__).resolve().parents[1] / "telemetry.env")
                     .read_text().splitlines() if line and not line.startswith("#"))
ARTIFACT_ROOT = Path("mlartifacts")


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_hash(lock: Path = Path("dvc.lock")) -> str:
    """md5 of the combined metadata as recorded in dvc.lock (DVC updates it stage by stage)."""
    try:
        stages = yaml.safe_load(lock.read_text())["stages"]
        for out in stages["combine"]["outs"]:
            if out["path"].endswith("meta.parquet"):
                return out["md5"]
    except (OSError, KeyError, TypeError):
        pass
    return "unknown"


def tracking_uri(params: Params) -> str:
    """MLFLOW_TRACKING_URI when set (a team's `mlflow server`, docs/scaling-out.md), else params.yaml's
    zero-setup sqlite file. Not a DVC param: where runs are logged changes no output."""
    return os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri


def setup(params: Params) -> None:
    """Points MLflow at the backend and experiment. A local backend gets a local artifact root; a
    tracking server keeps its own (`--artifacts-destination`: the team's object store), which the
    clients reach through the server, so they hold no object-store credentials."""
    os.environ.update(TELEMETRY_OFF)
    import mlflow

    uri, before = tracking_uri(params), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # MLflow exports the URI to os.environ (for its subprocesses). Put the user's value back: otherwise
    # a later setup() in this process, or a command it starts (dvc repro), would take the URI chosen
    # here for the user's and ignore its own params.yaml
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    if mlflow.get_experiment_by_name(params.tracking.experiment) is None:
        local = not uri.startswith(("http://", "https://", "databricks"))
        try:
            mlflow.create_experiment(params.tracking.experiment,
                                     artifact_location=ARTIFACT_ROOT.resolve().as_uri() if local else None)
        except mlflow.exceptions.MlflowException as e:    # another stage or machine created it meanwhile
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    mlflow.set_experiment(params.tracking.experiment)


@contextlib.contextmanager
def stage_run(params: Params, stage: str, cfg: Any = None, tags: dict[str, str] | None = None,
              system_metrics: bool = False) -> Iterator[str]:
    """Opens the MLflow run of one stage and yields its id; logs `cfg` (a params section) flattened.

    system_metrics: sample CPU/memory/GPU use every 10 s while the run is open (training).
    """
    setup(params)
    import mlflow

    all_tags = {"stage": stage, "git_commit": _git_commit(), "data_hash": data_hash(), "source": params.ingest.dataset,
                **(tags or {})}
    if os.environ.get("DVC_EXP_NAME"):               # set by `dvc exp run` (make repro PROFILE=...)
        all_tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    all_tags = {k: str(v) for k, v in all_tags.items()}    # a tracking server takes strings only (sqlite: any)
    with mlflow.start_run(run_name=run_name(stage, all_tags), tags=all_tags, log_system_metrics=system_metrics) as run:
        if cfg is not None:
            mlflow.log_params({f"{stage}.{k}": v for k, v in as_flat_dict(cfg).items()})
        yield run.info.run_id


def run_name(stage: str, tags: dict[str, str]) -> str:
    """What the MLflow UI lists: stage, data source, architecture and DVC experiment where there are
    any, e.g. `train-rating scut convnet (scut-20261201-1830)`, so runs can be told apart by name."""
    name = " ".join([stage, tags["source"], *([tags["arch"]] if "arch" in tags else [])])
    return f"{name} ({tags['dvc_experiment']})" if "dvc_experiment" in tags else name


# The finished run that `continue_run` adds to (None: the active run of `stage_run`).
_CONTINUED: contextvars.ContextVar[str | None] = contextvars.ContextVar("continued_run", default=None)


def log_metrics(given: Mapping[str, float | None], step: int | None = None) -> None:
    """Logs the numbers; a None (an epoch that was not validated: train.<task>.val_every) is left out."""
    import mlflow

    metrics = {k: v for k, v in given.items() if v is not None}

    run_id = _CONTINUED.get()
    if run_id is None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    mlflow.MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()])


def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    run_id, tags = _CONTINUED.get(), {k: str(v) for k, v in tags.items()}
    if run_id is None:
        mlflow.set_tags(tags)
    else:
        for k, v in tags.items():
            mlflow.MlflowClient().set_tag(run_id, k, v)


def log_table(df, name: str, source: str, context: str = "stage") -> None:
    """Logs a pandas table as an MLflow dataset input (name, digest, schema, source): data lineage."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    with warnings.catch_warnings():   # source-kind and int-schema hints that do not apply here
        warnings.simplefilter("ignore", UserWarning)
        mlflow.log_input(from_pandas(df, source=source, name=name), context=context)


def log_artifacts(paths: list[Path], artifact_path: str | None = None) -> None:
    """Logs files or folders (folders recursively) under `artifact_path`."""
    import mlflow

    run_id = _CONTINUED.get()
    for p in map(Path, paths):
        if p.is_dir():
            where = f"{artifact_path}/{p.name}" if artifact_path else p.name
            if run_id is None:
                mlflow.log_artifacts(str(p), artifact_path=where)
            else:
                mlflow.MlflowClient().log_artifacts(run_id, str(p), where)
        elif p.exists():
            if run_id is None:
                mlflow.log_artifact(str(p), artifact_path=artifact_path)
            else:
                mlflow.MlflowClient().log_artifact(run_id, str(p), artifact_path)


@contextlib.contextmanager
def continue_run(params: Params, run_id: str) -> Iterator[str]:
    """Adds to a finished run (evaluate: test metrics; refit: the final weights) without re-opening
    it: a re-opened run would end again now, and its duration in the UI would no longer be its
    training's. The helpers below log to `run_id` while this is open."""
    setup(params)
    token = _CONTINUED.set(run_id)
    try:
        yield run_id
    finally:
        _CONTINUED.reset(token)


def log_torch_model(model, example_images) -> str:
    """Logs a TaskModel with signature and a 2-photo input example (batch >= 2 keeps the batch
    dimension dynamic in torch.export); pinned requirements skip MLflow's slow inference."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from pipeline.core.preprocess import to_tensor

    x = to_tensor(example_images).numpy()                     # (2, 3, S, S) float32
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()                # (2,)
    info = mlflow.pytorch.log_model(model, name="model", input_example=x, signature=infer_signature(x, y),
                                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
    return info.model_uri                                     # models:/m-<id> (an MLflow 3 LoggedModel)


def register_and_promote(model_uri: str, name: str, metric: str, value: float,
                         score_champion: Callable[[Path], float], promote: bool = True,
                         weights_sha256: str | None = None, description: str | None = None) -> dict:
    """Registers the logged model as a new version of `name`; moves alias `champion` to it when it
    beats the current champion, which is re-scored with `score_champion(bundle_path)` on the caller's
    data - so both are compared on the same test split, whatever split the champion was tested on.

    A bundle whose `weights_sha256` a version of `name` already has is not registered again (a rerun
    of a deterministic pipeline): the decision names that version, and nothing moves.

    The champion is re-scored from its training run's weights bundle (`bundle/model.pt`, which the
    caller loads with `torch.load(weights_only=True)`), not from the logged MLflow model: loading
    that one unpickles whatever the registry holds, i.e. runs its code.
    """
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    active = mlflow.active_run()
    run_id = _CONTINUED.get() or (active.info.run_id if active is not None else None)
    # check for a copy, register, read the champion, compare, move the alias: one promotion at a time
    # per model name, so that two runs promoting at once cannot both win (the second compares against
    # the first's result) nor both register the same weights
    with promotion_lock(client, name, holder=run_id or model_uri) as lease:
        champ = _alias_version(client, name)
        same = _version_with_weights(client, name, weights_sha256) if weights_sha256 else None
        if same is not None:              # these weights are registered already: no copy, no new comparison
            return {"model": name, "version": int(same.version), metric: round(value, 6),
                    "champion_version": None if champ is None else int(champ.version), "champion_rescored": None,
                    "promoted": False, "registered": False}
        version = _register(client, model_uri, name, run_id, metric, value, weights_sha256, description)
        champ_value = None
        if champ is not None:
            with tempfile.TemporaryDirectory() as tmp:
                champ_value = score_champion(Path(_download(champ, name, "bundle/model.pt", Path(tmp))[1]))
        promoted = promote and beats(value, champ_value)
        if promoted:
            lease.check()                 # still ours (not broken while re-scoring): only then move it
            client.set_registered_model_alias(name, ALIAS, version)
    if promoted:
        if run_id is not None:            # the champion is marked on its run too (the runs view shows tags)
            client.set_tag(run_id, "champion", f"{name} v{version}")
        old_run = champ.tags.get("run_id") if champ is not None else None
        if old_run:
            client.set_tag(old_run, "champion", f"replaced by v{version}")
    return {"model": name, "version": int(version), metric: round(value, 6),
            "champion_version": int(version) if promoted else (None if champ is None else int(champ.version)),
            "champion_rescored": None if champ_value is None else round(champ_value, 6),
            "promoted": bool(promoted), "registered": True}


def _register(client, model_uri: str, name: str, run_id: str | None, metric: str, value: float,
              weights_sha256: str | None, description: str | None) -> str:
    """A new version of `name` from the logged model, tagged with what the registry page shows -> it."""
    import mlflow

    version = mlflow.register_model(model_uri, name).version
    if description:                       # the registered model's page in the MLflow UI shows the model card
        client.update_registered_model(name, description=fit_description(description))
    if run_id is not None:                # the run that trained it (MLflow 3 registers a LoggedModel)
        client.set_model_version_tag(name, version, "run_id", run_id)
    client.set_model_version_tag(name, version, f"test_{metric}", f"{value:.6f}")
    client.set_model_version_tag(name, version, "data_hash", data_hash())
    if weights_sha256:
        client.set_model_version_tag(name, version, "weights_sha256", weights_sha256)
    return version


def _alias_version(client, name: str):
    """The version `name@champion` points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None


LEASE_INFIX = ".promotion-lease."


class _Registry:
    """pipeline/core/lease.py's Store on the model registry: a lease key is a registered model (its
    name is unique in the tracking store: creating it is the atomic step), its holder a tag."""

    def __init__(self, client) -> None:
        self.client = client

    def create(self, key: str, holder: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(key, tags={"holder": holder},
                                                description="a promotion in progress (pipeline/core/lease.py)")
            return True
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return False

    def holders(self, prefix: str) -> dict[str, str]:
        like = prefix.replace("'", "")                        # names are ours; LIKE's _ and % filtered below
        found = self.client.search_registered_models(filter_string=f"name LIKE '{like}%'", max_results=100)
        return {m.name: m.tags.get("holder", "") for m in found if m.name.startswith(prefix)}

    def delete(self, key: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model(key)
        except MlflowException as e:
            if e.error_code == "PERMISSION_DENIED":       # another user's superseded key (a server with
                warnings.warn(f"cannot delete {key}: {e.message}", stacklevel=2)   # logins): harmless, left
            elif e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise


def promotion_lock(client, name: str, holder: str, wait_s: float = 1200, stale_s: float = 900):
    """One promotion of `name` at a time, on sqlite as on a tracking server (pipeline/core/lease.py)."""
    from pipeline.core.lease import lease

    return lease(_Registry(client), name + LEASE_INFIX, holder, wait_s=wait_s, stale_s=stale_s)


def _version_with_weights(client, name: str, sha256: str):
    """The newest registered version of `name` whose weights bundle has this sha256, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    same = [v for v in versions if v.tags.get("weights_sha256") == sha256]
    return max(same, key=lambda v: int(v.version)) if same else None


def champion(params: Params, name: str, artifacts: list[str], dest: Path) -> dict:
    """Downloads the first of `artifacts` that the run behind `name@champion` has into `dest`
    -> version info, with `artifact` saying which one it was. Raises LookupError: no champion."""
    setup(params)
    from mlflow import MlflowClient

    mv = _alias_version(MlflowClient(), name)
    if mv is None:                  # e.g. `make estimate` runs (promote false) in a clone that never promoted
        raise LookupError(f"{name} has no '{ALIAS}' version yet: evaluate names one when evaluate.promote is "
                          "true and the model is at least as good as the last (make repro)")
    for i, artifact in enumerate(artifacts):
        try:
            run_id, path = _download(mv, name, artifact, dest)
            break
        except FileNotFoundError:
            if i == len(artifacts) - 1:
                raise
    return {"model": name, "version": int(mv.version), "run_id": run_id, "path": path, "tags": dict(mv.tags),
            "artifact": artifact}


def _download(mv, name: str, artifact: str, dest: Path) -> tuple[str, str]:
    """`artifact` of the training run behind model version `mv` -> (run id, local path under dest)."""
    import mlflow

    run_id = mv.tags.get("run_id") or mv.run_id          # MLflow 3 registers a LoggedModel: our tag names the run
    try:
        return run_id, mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=str(dest))
    except mlflow.exceptions.MlflowException as e:
        raise FileNotFoundError(f"{name} v{mv.version} (run {run_id}) has no artifact {artifact}") from e
