"""deploy/k8s: both overlays (cpu, gpu) rendered by kustomize and validated offline against the API schemas
(kubernetes-validate --strict, `make k8s-tools`); what they must hold to deploy as written; the facts they
share with the image and the service; and the one command that pins the image (deploy/rollout.py)."""
import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

K8S = ROOT / "deploy/k8s"
VALIDATE = ROOT / ".venv-k8s/bin/kubernetes-validate"
OVERLAYS = ("cpu", "gpu")
sys.path.insert(0, str(ROOT / "deploy"))
import rollout  # noqa: E402


@functools.cache                                # one kustomize build per overlay for the module
def _render(overlay: str) -> str:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (its built-in kustomize) is not installed")
    p = subprocess.run(["kubectl", "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _docs(overlay: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(_render(overlay))}


def _validate(paths: list[Path]) -> subprocess.CompletedProcess:
    if not VALIDATE.exists():
        pytest.skip("kubernetes-validate is not installed: make k8s-tools")
    return subprocess.run([str(VALIDATE), "--strict", "--kubernetes-version", "1.37.0", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_and_passes_strict_schema_validation(overlay, tmp_path):
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(_render(overlay))
    p = _validate([rendered])
    assert p.returncode == 0, p.stdout + p.stderr
    kinds = sorted(_docs(overlay))
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget", "Service",
                     "ServiceAccount"]
    assert p.stdout.count("passed") == len(kinds)


def test_the_validator_rejects_a_misspelt_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((K8S / "base/deployment.yaml").read_text().replace("readinessProbe:", "readynessProbe:"))
    p = _validate([bad])
    assert p.returncode != 0 and "readynessProbe" in p.stdout + p.stderr


def test_the_base_lists_every_manifest():
    k = yaml.safe_load((K8S / "base/kustomization.yaml").read_text())
    assert sorted(k["resources"]) == sorted(p.name for p in (K8S / "base").glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_what_would_stop_a_deployment_is_absent(overlay):
    docs = _docs(overlay)
    dep, hpa, pdb, net = (docs[k] for k in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                                            "NetworkPolicy"))
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    # pinned by digest: a reused tag with IfNotPresent would never be pulled again
    assert re.fullmatch(r"[a-z0-9.:/-]+@sha256:[0-9a-f]{64}", c["image"]), c["image"]
    assert "replicas" not in dep["spec"]                     # the HPA owns the count; an apply would reset it
    assert hpa["spec"]["minReplicas"] >= 2
    assert pdb["spec"] == {**pdb["spec"], "maxUnavailable": 1} and "minAvailable" not in pdb["spec"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and docs["ServiceAccount"]["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    labels = dep["spec"]["selector"]["matchLabels"]
    assert net["spec"]["podSelector"]["matchLabels"] == labels and set(net["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for r in net["spec"]["ingress"] for p in r["ports"]] == ["http"]
    assert {p["port"] for r in net["spec"]["egress"] for p in r["ports"]} == {53}     # DNS only
    cpus = next(e for e in c["env"] if e["name"] == "FACES_CPUS")
    assert cpus["valueFrom"]["resourceFieldRef"]["resource"] == "requests.cpu"     # threads from the pod, not the node


def test_the_gpu_overlay_adds_a_gpu_and_rolls_without_a_spare_one():
    from service.settings import RESOURCES

    cpu, gpu = (_docs(o)["Deployment"] for o in OVERLAYS)
    (c_cpu,), (c_gpu,) = (d["spec"]["template"]["spec"]["containers"] for d in (cpu, gpu))
    assert "nvidia.com/gpu" not in c_cpu["resources"]["requests"] and "tolerations" not in cpu["spec"]["template"]["spec"]
    assert str(c_cpu["resources"]["requests"]["cpu"]) == RESOURCES["cpu"]   # service/settings.py, the one place
    assert c_gpu["resources"]["limits"]["nvidia.com/gpu"] == c_gpu["resources"]["requests"]["nvidia.com/gpu"] == RESOURCES["gpu"]
    assert cpu["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert gpu["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    assert c_gpu["image"].split("@")[0] != c_cpu["image"].split("@")[0]      # the CUDA image, not the CPU one


def test_the_overlays_agree_with_the_image():
    dep, svc, hpa, pdb = (_docs("cpu")[k] for k in ("Deployment", "Service", "HorizontalPodAutoscaler",
                                                   "PodDisruptionBudget"))
    labels = dep["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["template"]["metadata"]["labels"] == labels
    assert svc["spec"]["selector"] == labels and pdb["spec"]["selector"]["matchLabels"] == labels
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert c["ports"][0]["containerPort"] == int(re.search(r"^EXPOSE (\d+)", dockerfile, re.M).group(1))
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["BENTOML_PORT"] == str(c["ports"][0]["containerPort"])
    assert pod["securityContext"]["runAsUser"] == int(re.search(r"useradd .*--uid (\d+)", dockerfile).group(1))
    # BentoML's own health routes: /livez (the process answers), /readyz (the models are loaded)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"


@pytest.mark.parametrize("ref", ["reg.example.com/faces-serve:latest", "faces-serve", "reg/faces@sha256:abc",
                                 "reg/faces:v1@sha256:" + "0" * 63])
def test_an_image_is_pinned_only_by_a_full_digest(ref):
    with pytest.raises(SystemExit, match="not pinned by digest"):
        rollout.pinned(ref)


def test_one_command_pins_an_overlays_image_and_keeps_its_comments(tmp_path):
    k = tmp_path / "kustomization.yaml"
    k.write_text((K8S / "gpu/kustomization.yaml").read_text())
    ref = "reg.example.com:5000/team/faces-serve-gpu@sha256:" + "ab" * 32
    subprocess.run([sys.executable, str(ROOT / "deploy/rollout.py"), "--set", ref, "--overlay", "gpu",
                    "--kustomization", str(k), "--env-file", str(tmp_path / "image.env")], check=True,
                   capture_output=True)
    image = yaml.safe_load(k.read_text())["images"][0]
    assert f"{image['newName']}@{image['digest']}" == ref
    assert k.read_text().startswith("# Replicated serving on GPU nodes")
    assert (tmp_path / "image.env").read_text() == f"IMAGE={ref}\n"
    p = subprocess.run([sys.executable, str(ROOT / "deploy/rollout.py"), "--set", "reg/faces:latest",
                        "--kustomization", str(k)], capture_output=True, text=True)
    assert p.returncode != 0 and "not pinned by digest" in p.stderr
    assert yaml.safe_load(k.read_text())["images"][0]["digest"] == image["digest"]     # untouched
