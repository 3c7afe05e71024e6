"""How the service runs: its worker processes, the resources it asks for, its request timeout.

The one place for these numbers: service/service.py's `@bentoml.service` reads them, and
tests/deploy/test_deploy.py checks that deploy/k8s asks a scheduler for the same resources. On a
larger machine, FACES_WORKERS sets the worker count (each worker holds its own copy of the models and
takes its share of the cores). What a request may cost is not here: those bounds travel with the
models (service/limits.py `Bounds`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

CPU = "2"                               # per replica: cores reserved (and, by default, worker processes)
RESOURCES: dict[str, str | int] = {"cpu": CPU, "gpu": 1}       # per replica; a GPU is used when present, the CPU path runs without


def workers(env: Mapping[str, str] = os.environ) -> int:
    """FACES_WORKERS (default 2, one per core of RESOURCES["cpu"]) -> worker processes. Raises SystemExit."""
    raw = env.get("FACES_WORKERS", CPU)
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise SystemExit(f"faces: FACES_WORKERS must be a whole number from 1 to 64, not {raw!r}")
    return int(raw)


WORKERS = workers()
TIMEOUT_S = 60                          # BentoML's traffic timeout (504 past it); also the body timeout
