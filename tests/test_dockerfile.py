"""Static checks of the serving image: hadolint (offline, from PyPI) and the image contract."""
import os
import subprocess
import sys

from conftest import ROOT


def test_hadolint_passes():
    hadolint = os.path.join(os.path.dirname(sys.executable), "hadolint")
    p = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_image_contract_gpu_base_non_root_health_and_port():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=nvidia/cuda:" in text and "FROM ${BASE_IMAGE}" in text
    assert "USER 10001" in text and "/readyz" in text and "EXPOSE 3000" in text
    assert "BENTOML_PORT=3000" in text


def _pipeline_modules_the_service_imports() -> set[str]:
    """pipeline/*.py files reachable from service/*.py through imports (incl. those inside functions)."""
    import ast

    todo, seen = list((ROOT / "service").glob("*.py")), set()
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name.startswith("pipeline.") and name not in seen:
                    seen.add(name)
                    todo.append(ROOT / (name.replace(".", "/") + ".py"))
    return {f"pipeline/{n.split('.')[1]}.py" for n in seen}


def test_the_image_and_the_bento_carry_every_pipeline_module_the_service_imports():
    needed = _pipeline_modules_the_service_imports()
    assert {"pipeline/preprocess.py", "pipeline/model.py", "pipeline/atomic.py"} <= needed
    copied = next(line for line in (ROOT / "Dockerfile").read_text().splitlines()
                  if line.startswith("COPY") and "pipeline/" in line)
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    bento = (ROOT / "bentofile.yaml").read_text()
    for path in sorted(needed):
        assert path in copied.split(), f"Dockerfile does not copy {path}"
        assert f"!{path}" in allowed, f".dockerignore keeps {path} out of the build context"
        assert f'"{path}"' in bento, f"bentofile.yaml does not include {path}"
