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


def test_the_image_and_the_bento_carry_the_core_whole():
    """What the service may import (pipeline/core only) is tests/test_architecture.py's wall."""
    copies = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY")]
    assert any("pipeline/core/" in c and c[-1] == "pipeline/core/" for c in copies), "Dockerfile does not copy pipeline/core/"
    assert any("pipeline/__init__.py" in c for c in copies)
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"!pipeline/__init__.py", "!pipeline/core/"} <= set(allowed)
    bento = (ROOT / "bentofile.yaml").read_text()
    assert '"pipeline/__init__.py"' in bento and '"pipeline/core/*.py"' in bento


def _pins(text: str) -> dict[str, str]:
    """`name==version [\\ --hash=sha256:H]` entries -> {name: "version H"}."""
    import re

    return {m[0]: f"{m[1]} {m[2]}".strip() for m in re.findall(r"^([a-z0-9-]+)==(\S+?)(?: \\\n\s+--hash=sha256:(\w+))?$",
                                                                text, re.M)}


def test_the_image_and_the_bento_are_pinned_from_the_lock():
    lock = _pins((ROOT / "requirements.lock").read_text())
    serve = _pins((ROOT / "docker/requirements-serve.txt").read_text())
    bento = _pins((ROOT / "docker/requirements-bento.txt").read_text())
    assert len(lock) > 200 and all(" " in v for v in lock.values()), "every lock pin carries a hash"
    assert {"bentoml", "pillow", "opencv-python-headless"} <= set(serve) and "torch" not in serve
    assert all(lock[n] == v for n, v in serve.items()), "the image's pins and hashes are the lock's"
    assert bento == {n: v.split()[0] for n, v in lock.items() if n in set(serve) | {"torch"}}
    assert "--require-hashes -r /tmp/requirements-serve.txt" in (ROOT / "Dockerfile").read_text()
