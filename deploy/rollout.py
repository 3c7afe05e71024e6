"""From the registry's `champion` alias to pods running it, in one command: the image of the champions,
pushed, pinned by digest in a Kubernetes overlay (and in an env file for deploy/compose.yaml).

    python deploy/rollout.py --registry REGISTRY [--overlay cpu|gpu]     (make rollout REGISTRY=...)
    python deploy/rollout.py --set REGISTRY/faces-serve@sha256:... [--overlay gpu]   (make k8s-image IMAGE=...)

A rollout: (1) `dvc repro package` exports the versions the `champion` aliases name (models/serving.json
says which); (2) the image is built with them (`make docker-context`, the Dockerfile; `--from IMAGE`
retags one already built instead), labelled and tagged with those versions; (3) pushed; (4) the digest
the registry returned is written into deploy/k8s/<overlay>/kustomization.yaml and `--env-file`;
`kubectl apply -k deploy/k8s/<overlay>` then rolls the Deployment over to exactly those bytes. A tag is
never written: a reused tag names other bytes later, and a cached one is never pulled again.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINNED = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._:/-]*[a-z0-9])@(?P<digest>sha256:[0-9a-f]{64})$")
BUILD_ARGS = {"cpu": ["--build-arg", "BASE_IMAGE=debian:bookworm",
                      "--build-arg", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"], "gpu": []}


def pinned(ref: str) -> tuple[str, str]:
    """`name@sha256:<64 hex>` -> (name, digest); anything else (a tag, `latest`, a short digest) is refused."""
    m = PINNED.match(ref)
    if m is None:
        raise SystemExit(f"rollout: {ref!r} is not pinned by digest (NAME@sha256:<64 hex>): a tag can name "
                         "other bytes tomorrow")
    return m["name"], m["digest"]


def set_image(kustomization: Path, ref: str) -> None:
    """Writes `ref` (pinned) as the overlay's image: its `newName` and `digest` lines, comments kept."""
    name, digest = pinned(ref)
    text = kustomization.read_text()
    new, n = re.subn(r"(?m)^(\s+newName:) \S+$", rf"\1 {name}", text)
    new, m = re.subn(r"(?m)^(\s+digest:) \S+$", rf"\1 {digest}", new)
    if (n, m) != (1, 1):
        raise SystemExit(f"rollout: {kustomization} has no single images entry (newName + digest) to set")
    tmp = kustomization.with_name(f".{kustomization.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, kustomization)


def champions(serving: Path = ROOT / "models/serving.json") -> dict[str, str]:
    """task -> registered model and version in the image (what the package stage exported)."""
    models = json.loads(serving.read_text())
    return {task: f"{m['mlflow_model']} v{m['mlflow_version']}" for task, m in models.items()}


def _sh(*cmd: str) -> str:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"rollout: {' '.join(cmd)} failed:\n{(p.stdout + p.stderr)[-2000:]}")
    return p.stdout.strip()


def build_and_push(registry: str, overlay: str, source: str | None) -> str:
    """The champions' image, pushed -> its reference by digest."""
    if source is None:
        _sh("dvc", "repro", "package")                # the versions the aliases name, exported
    found = champions()
    version = "-".join(m.split(" v")[-1] for m in found.values())
    tag = f"{registry}/faces-serve{'-gpu' if overlay == 'gpu' else ''}:champions-{version}"
    if source is None:
        _sh("make", "docker-context")
        label = "faces.champions=" + ", ".join(f"{t}: {m}" for t, m in found.items())
        _sh("docker", "build", "--network", "host", *BUILD_ARGS[overlay], "--label", label, "-t", tag, ".")
    else:
        _sh("docker", "tag", source, tag)
    _sh("docker", "push", tag)
    repo = tag.rsplit(":", 1)[0]
    digests = json.loads(_sh("docker", "image", "inspect", "--format", "{{json .RepoDigests}}", tag))
    ref = next((d for d in digests if d.startswith(repo + "@")), None)
    if ref is None:
        raise SystemExit(f"rollout: the registry returned no digest for {tag}")
    return ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--registry", help="push the champions' image there (e.g. registry.example.com/team)")
    what.add_argument("--set", metavar="IMAGE@sha256:...", help="pin this image; build and push nothing")
    ap.add_argument("--overlay", choices=sorted(BUILD_ARGS), default="cpu")
    ap.add_argument("--from", dest="source", help="retag this built image instead of building")
    ap.add_argument("--kustomization", type=Path, help="default: deploy/k8s/<overlay>/kustomization.yaml")
    ap.add_argument("--env-file", type=Path, help="also write IMAGE=<ref> here (deploy/compose.yaml reads it)")
    args = ap.parse_args()
    ref = args.set or build_and_push(args.registry, args.overlay, args.source)
    pinned(ref)
    kustomization = args.kustomization or ROOT / f"deploy/k8s/{args.overlay}/kustomization.yaml"
    set_image(kustomization, ref)
    if args.env_file:
        args.env_file.write_text(f"IMAGE={ref}\n")
    print(f"rollout: {kustomization.relative_to(ROOT) if kustomization.is_relative_to(ROOT) else kustomization} "
          f"-> {ref}" + ("" if args.set else f" ({', '.join(champions().values())})"))
    print(f"next: kubectl apply -k deploy/k8s/{args.overlay}", file=sys.stderr)


if __name__ == "__main__":
    main()
