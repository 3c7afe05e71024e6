"""dvc.yaml lists what each stage reads: every pipeline module it runs and every params key it uses.

A stage that reads something its entry does not list is not rerun when that thing changes (an edit to
the Pearson code once changed which epoch train kept, and DVC did not rerun train). Static checks of
the stage modules' source: imports (transitively, through the core modules) and `params.<section>.<key>`
accesses. Not listed on purpose: `tracking` (where runs are logged, not what is computed),
`pipeline/core/config.py` (the loader) and `pipeline/core/atomic.py` (how files are written).
"""
import dataclasses
import re

import pytest
import yaml

from pipeline.core.config import Params

from conftest import ROOT, imported

NOT_DEPS = {"pipeline.tracking", "pipeline.core.config", "pipeline.core.atomic"}
SECTIONS = {f.name for f in dataclasses.fields(Params)} - {"tracking"}
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _module(cmd: str) -> str:
    return re.search(r"python -m (pipeline\.[\w.]+)", cmd).group(1)


def stage_modules() -> dict[str, str]:
    """dvc.yaml stage name -> the pipeline module its command runs."""
    return {name: _module((st.get("do") or st)["cmd"]) for name, st in STAGES.items()}


def imports(module: str) -> set[str]:
    """The pipeline modules `module` imports anywhere in its source (top level or inside functions)."""
    return {n for n in imported(ROOT / (module.replace(".", "/") + ".py")) if n.startswith("pipeline.")} - {module}


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [i for i in imports(m) if i not in NOT_DEPS]
    return seen


def _sub(text, key: str) -> str:
    return str(text).replace("${item}", key).replace("${key}", key)


def declared(name: str) -> tuple[set[str], list[str]]:
    st = STAGES[name].get("do") or STAGES[name]
    items = STAGES[name].get("foreach")
    keys = list(items) if isinstance(items, dict) else (items or [""])
    deps, params = set(), []
    for key in keys:
        deps |= {_sub(d, key) for d in st.get("deps", [])}
        params += [_sub(p, key) for p in st.get("params", [])]
    return deps, params


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_imports_another_stage(stage):
    stages = set(stage_modules().values())
    module = stage_modules()[stage]
    assert not (closure(module) - {module}) & stages, f"{module} imports another stage"


PROMOTES = re.compile(r"tracking\.(register_and_promote|champion)\(")     # applies pipeline/core/promotion.py


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_runs_is_a_dependency(stage):
    deps, _ = declared(stage)
    module = stage_modules()[stage]
    files = {m.replace(".", "/") + ".py" for m in closure(module)}
    if PROMOTES.search((ROOT / (module.replace(".", "/") + ".py")).read_text()):
        files.add("pipeline/core/promotion.py")           # the registry's policy decides what this stage writes
    assert files - deps == set(), f"{stage}: reads {sorted(files - deps)} without listing them in dvc.yaml"


def params_read(module: str) -> set[str]:
    """`params.<section>[.<key>]` in a stage module's source, e.g. {"train.precision", "evaluate"}."""
    text = (ROOT / (module.replace(".", "/") + ".py")).read_text()
    out = set()
    for section, key in re.findall(r"\bparams\.([a-z_]+)(?:\.([a-z_]+))?", text):
        if section in SECTIONS:
            out.add(f"{section}.{key}" if key else section)
    return out


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_params_key_a_stage_reads_is_declared(stage):
    _, params = declared(stage)
    missing = set()
    for read in params_read(stage_modules()[stage]):
        section = read.split(".")[0]
        # a whole section read (cfg = params.evaluate, getattr(params.train, task)) is covered by the
        # section or, for train, by the task's subsection; a key by itself or its section
        if not any(p == read or read.startswith(p + ".") or (read == section and p.startswith(section + "."))
                   for p in params):
            missing.add(read)
    assert not missing, f"{stage}: reads params {sorted(missing)} that dvc.yaml does not declare"


def test_the_per_task_stages_run_exactly_the_served_tasks():
    """dvc.yaml cannot import pipeline/core/tasks.py: its task lists are checked against SERVED instead."""
    from pipeline.core.tasks import SERVED

    for name in ("train", "refit", "evaluate"):
        items = STAGES[name]["foreach"]
        assert tuple(items) == SERVED, f"{name}: foreach {items} is not tasks.SERVED {SERVED}"
