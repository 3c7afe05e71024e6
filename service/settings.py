"""How the service runs: its worker processes, the resources it asks for, its request timeout.

The one place for these numbers: service/service.py's `@bentoml.service` reads them, and
tests/deploy/test_deploy.py checks that deploy/k8s asks a scheduler for the same resources. On a
larger machine, FACES_WORKERS sets the worker count (each worker holds its own copy of the models and
takes its share of the cores). The cores are FACES_CPUS (deploy/k8s sets it to the pod's CPU request)
or what the process may use (affinity and cgroup quota, not the node's count). What a request may
cost is not here: those bounds travel with the models (service/limits.py `Bounds`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline.core.execution import available_cpus

CPU = "2"                               # per replica: cores reserved (and, by default, worker processes)
RESOURCES: dict[str, str | int] = {"cpu": CPU, "gpu": 1}       # per replica; a GPU is used when present, the CPU path runs without


def _count(env: Mapping[str, str], name: str, default: str, most: int) -> int:
    raw = env.get(name, default)
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise SystemExit(f"faces: {name} must be a whole number from 1 to {most}, not {raw!r}")
    return int(raw)


def cpus(env: Mapping[str, str] = os.environ) -> int:
    """FACES_CPUS (the pod's CPU request, by the downward API) or the cores this process may use."""
    return _count(env, "FACES_CPUS", str(available_cpus()), 256)


def workers(env: Mapping[str, str] = os.environ) -> int:
    """FACES_WORKERS (default: FACES_CPUS when set, else 2, one per core of RESOURCES["cpu"]) -> worker
    processes. Raises SystemExit."""
    default = str(cpus(env)) if "FACES_CPUS" in env else CPU      # FACES_CPUS checked under its own name
    return _count(env, "FACES_WORKERS", default, 64)


def threads(env: Mapping[str, str] = os.environ) -> int:
    """torch threads per worker: its share of the cores (at least 1)."""
    return max(1, cpus(env) // workers(env))


CPUS = cpus()                           # also the face step's OpenCV threads (service/decoder.py)
WORKERS = workers()
THREADS = threads()
TIMEOUT_S = 60                          # BentoML's traffic timeout (504 past it); also the body timeout
