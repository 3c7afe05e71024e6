"""Exports the packaged champions (models/serving.json) from the BentoML store into the Docker context.

    python docker/export_models.py [models/serving.json] [docker/context/models]

Each model becomes `<name>.bentomodel` (`bentoml models export`, BentoML's own archive format); the
Dockerfile imports them with `bentoml models import` into the image's store, so neither side depends
on how BentoML lays out its store folder.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import bentoml


def export(serving: Path, dest: Path) -> list[str]:
    """Replaces dest's exports with the models serving.json names -> their tags."""
    tags = [v["tag"] for v in json.loads(serving.read_text()).values()]
    dest.mkdir(parents=True, exist_ok=True)
    for child in dest.glob("*.bentomodel"):
        child.unlink()
    for tag in tags:
        model = bentoml.models.get(tag)
        # an absolute path ending in .bentomodel: BentoML resolves others against / or appends the suffix
        tmp = dest.resolve() / f".{model.tag.name}.tmp.bentomodel"
        bentoml.models.export_model(tag, str(tmp))
        tmp.rename(dest / f"{model.tag.name}.bentomodel")      # a killed export leaves no half archive
    return tags


if __name__ == "__main__":
    args = sys.argv[1:] + ["models/serving.json", "docker/context/models"][len(sys.argv[1:]):]
    print("exported:", *export(Path(args[0]), Path(args[1])))
