"""deploy/: the Kubernetes manifests validated offline against the API schemas (kubernetes-validate,
`make k8s-tools`), and the facts they share with the image and the service checked against those."""
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

K8S = ROOT / "deploy/k8s"
VALIDATE = ROOT / ".venv-k8s/bin/kubernetes-validate"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs() -> dict[str, dict]:
    return {d["kind"]: d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text())}


def _validate(paths: list[Path]) -> subprocess.CompletedProcess:
    if not VALIDATE.exists():
        pytest.skip("kubernetes-validate is not installed: make k8s-tools")
    return subprocess.run([str(VALIDATE), "--strict", "--kubernetes-version", "1.37.0", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_manifests_pass_strict_schema_validation():
    p = _validate(MANIFESTS)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("passed") == len(MANIFESTS)


def test_the_validator_rejects_a_misspelt_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((K8S / "deployment.yaml").read_text().replace("readinessProbe:", "readynessProbe:"))
    p = _validate([bad])
    assert p.returncode != 0 and "readynessProbe" in p.stdout + p.stderr


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(k["resources"]) == [p.name for p in MANIFESTS]


def test_manifests_agree_with_the_image_and_each_other():
    docs = _docs()
    dep, svc, hpa, pdb = (docs[k] for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"))
    labels = dep["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["template"]["metadata"]["labels"] == labels
    assert svc["spec"]["selector"] == labels and pdb["spec"]["selector"]["matchLabels"] == labels
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert c["ports"][0]["containerPort"] == int(re.search(r"^EXPOSE (\d+)", dockerfile, re.M).group(1))
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["BENTOML_PORT"] == str(c["ports"][0]["containerPort"])
    assert pod["securityContext"]["runAsUser"] == int(re.search(r"useradd .*--uid (\d+)", dockerfile).group(1))
    # BentoML's own health routes: /livez (the process answers), /readyz (the models are loaded)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    from service.settings import RESOURCES

    # the pod asks for what the service is configured to use (service/settings.py, the one place)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == RESOURCES["gpu"]
    assert str(c["resources"]["requests"]["cpu"]) == RESOURCES["cpu"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
