"""telemetry.env is the one list of telemetry switches; every other carrier agrees with it."""
import re
import subprocess

import yaml

from pipeline.tracking import TELEMETRY_OFF

from conftest import ROOT

LIST = dict(line.split("=", 1) for line in (ROOT / "telemetry.env").read_text().splitlines()
            if line and not line.startswith("#"))
SERVING = {"BENTOML_DO_NOT_TRACK", "DO_NOT_TRACK"}          # what a process that only serves reads


def test_the_stages_set_the_list():
    assert TELEMETRY_OFF == LIST and {"DVC_NO_ANALYTICS", "MLFLOW_DISABLE_TELEMETRY", "GX_ANALYTICS_ENABLED"} <= set(LIST)


def test_make_exports_every_switch_to_its_commands():
    out = subprocess.run(["make", "-s", "--eval", "envcheck: ; @env", "envcheck"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert {k: env.get(k) for k in LIST} == LIST


def test_ci_sources_the_list():
    assert "set -a; . ./telemetry.env; set +a" in (ROOT / ".ci/run").read_text()


def test_the_image_and_the_deployments_set_the_serving_switches_to_the_same_values():
    docker = dict(re.findall(r"^\s+([A-Z_]+)=(\S+?)\s*\\?$", (ROOT / "Dockerfile").read_text(), re.M))
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    k8s = yaml.safe_load((ROOT / "deploy/k8s/base/deployment.yaml").read_text())
    carriers = {"Dockerfile": docker,
                "compose": {k: str(v) for s in compose["services"].values() for k, v in (s.get("environment") or {}).items()},
                "k8s": {e["name"]: e.get("value") for c in k8s["spec"]["template"]["spec"]["containers"] for e in c["env"]}}
    assert set(docker) >= SERVING, "the image must switch off BentoML's telemetry itself"
    for name, env in carriers.items():
        set_here = {k: v for k, v in env.items() if k in LIST}
        assert set_here == {k: LIST[k] for k in set_here}, f"{name} disagrees with telemetry.env: {set_here}"
