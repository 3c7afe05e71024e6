"""The walls of docs/architecture.md, checked on the source (imports anywhere in a module, functions included).

- pipeline/core imports no stage, no CLI, not the tracking adapter and no tool (mlflow, dvc, bentoml, GX);
- a stage imports no other stage and no CLI; the service imports only the core;
- mlflow is imported by pipeline/tracking.py alone;
- docs/architecture.md names every module of the packages it maps.
"""
from pathlib import Path

import pytest

from conftest import ROOT, imported

TOOLS = {"mlflow", "dvc", "bentoml", "great_expectations"}
PACKAGES = ("pipeline/core", "pipeline/stages", "pipeline/cli", "service")


def modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py")


def _ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


@pytest.mark.parametrize("path", modules("pipeline/core"), ids=_ids(modules("pipeline/core")))
def test_core_imports_no_stage_cli_adapter_or_tool(path):
    bad = {n for n in imported(path) if n.split(".")[0] in TOOLS | {"service"}
           or n.startswith(("pipeline.stages", "pipeline.cli", "pipeline.tracking"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("pipeline/stages"), ids=_ids(modules("pipeline/stages")))
def test_a_stage_imports_no_other_stage_and_no_cli(path):
    bad = {n for n in imported(path) if n.startswith(("pipeline.stages", "pipeline.cli", "service"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("service"), ids=_ids(modules("service")))
def test_the_service_imports_only_the_core_of_the_pipeline(path):
    bad = {n for n in imported(path) if n.split(".")[0] == "pipeline" and not n.startswith("pipeline.core.")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_service_uses_the_core_image_path_and_models():
    used = set().union(*(imported(p) for p in modules("service")))
    assert {"pipeline.core.preprocess", "pipeline.core.model"} <= used


def test_mlflow_is_imported_by_the_tracking_adapter_alone():
    users = {p.relative_to(ROOT).as_posix() for folder in ("pipeline", "service", "bench", "deploy")
             for p in (ROOT / folder).rglob("*.py") if any(n.split(".")[0] == "mlflow" for n in imported(p))}
    assert users == {"pipeline/tracking.py"}


def test_the_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [p.relative_to(ROOT).as_posix() for folder in PACKAGES for p in modules(folder)
               if f"`{p.stem}`" not in page]
    assert not missing, f"docs/architecture.md does not name {missing}"
    assert "`tracking`" in page
