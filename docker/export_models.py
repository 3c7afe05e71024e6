"""Copies the packaged champions (models/serving.json) from the BentoML store into the Docker context.

    python docker/export_models.py [models/serving.json] [docker/context/models]

The result is a minimal BentoML store (`<name>/<version>/` plus `<name>/latest`) that the Dockerfile
bakes into the image at $BENTOML_HOME/models.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import bentoml


def export(serving: Path, dest: Path) -> list[str]:
    tags = [v["tag"] for v in json.loads(serving.read_text()).values()]
    for child in dest.iterdir():
        if child.name != ".gitkeep":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for tag in tags:
        model = bentoml.models.get(tag)
        target = dest / model.tag.name / model.tag.version
        shutil.copytree(model.path, target)
        (dest / model.tag.name / "latest").write_text(model.tag.version)
    return tags


if __name__ == "__main__":
    args = sys.argv[1:] + ["models/serving.json", "docker/context/models"][len(sys.argv[1:]):]
    print("exported:", *export(Path(args[0]), Path(args[1])))
