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
