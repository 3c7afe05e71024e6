"""Servers for the benches: `bentoml serve` of a tree on a free loopback port, an old commit's code and
a model store it can read, the server's CPU, and a stop that leaves nothing running.

Used by bench/serve.py (this tree against an older commit) and docs/pictures.py (the demo page).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def use_champions(root: Path = ROOT) -> None:
    """Point the service at the champions `make repro` packaged (models/serving.json), unless the env
    already names models; a fresh clone has none, and gets one line saying what to run, not a traceback."""
    path = root / "models" / "serving.json"
    if not path.is_file():
        raise SystemExit(f"{path.relative_to(root)} is missing: the bench serves the models `make repro` "
                         "packaged; run `make repro` first (the synthetic default takes a few minutes)")
    serving = json.loads(path.read_text())
    for task in ("gender", "rating"):
        os.environ.setdefault(f"FACES_{task.upper()}_MODEL", serving[task]["tag"])


def serve(cwd: Path = ROOT, home: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`bentoml serve` of the service in `cwd` (its own pipeline/ and service/ come first on the path)
    on a free loopback port, with the model store `home` (default: this one's) -> (process, url) once
    /readyz answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bentoml = Path(sys.executable).parent / "bentoml"
    proc = subprocess.Popen([str(bentoml), "serve", "service.service:Faces", "--host", "127.0.0.1", "--port",
                             str(port)], cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(cwd)}
                            | ({"BENTOML_HOME": str(home)} if home else {}))
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            stop([proc])                             # its workers may still be starting
            raise RuntimeError(f"bentoml serve in {cwd} exited with {proc.returncode}: run `make serve` to see why "
                               "(an old --baseline refuses models packaged by newer code; --baseline none)")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop([proc])
    raise RuntimeError("bentoml serve did not become ready")


def export_commit(ref: str, into: Path) -> Path:
    """The service code of commit `ref` (pipeline/ and service/), exported with `git archive`."""
    into.mkdir()
    tar = subprocess.run(["git", "archive", ref, "pipeline", "service"], cwd=ROOT, check=True,
                         capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    return into


def baseline_store(into: Path) -> Path:
    """A BentoML home for the old service with the same two models (the same weights files), their
    metadata given the flat keys that commits before the serving bounds (issue 10) read, which newer
    packaging nests under `serving` -> its path."""
    import bentoml
    import yaml

    for task in ("gender", "rating"):
        src = Path(bentoml.models.get(os.environ[f"FACES_{task.upper()}_MODEL"]).path)
        dst = into / "models" / src.parent.name / src.name
        dst.mkdir(parents=True)
        (dst / "model.pt").symlink_to(src / "model.pt")
        info = yaml.safe_load((src / "model.yaml").read_text())
        bounds = info["metadata"]["serving"]
        info["metadata"].update(max_upload_bytes=int(bounds["max_upload_mb"] * 2**20), max_pixels=bounds["max_pixels"])
        (dst / "model.yaml").write_text(yaml.safe_dump(info))
    return into


def server_cpu_s(proc: subprocess.Popen) -> dict[str, float]:
    """CPU seconds so far of a server's processes by kind: "decoders" (service/decoder.py's children,
    `python -m service.decoder`) and "workers" (every other process of the server's tree)."""
    import psutil

    total = {"workers": 0.0, "decoders": 0.0}
    for p in psutil.Process(proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total["decoders" if "service.decoder" in p.cmdline() else "workers"] += t.user + t.system
    return total


def batch_sizes(url: str) -> tuple[float, float]:
    """(photos, model calls) of /predict and /predict_batch so far, summed over the server's workers
    (service/service.py's faces_predict_batch_size histogram on /metrics)."""
    import re

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return tuple(sum(float(v) for v in re.findall(rf"^faces_predict_batch_size_{part}(?:{{[^}}]*}})? (\S+)$", text, re.M))
                 for part in ("sum", "count"))  # type: ignore[return-value]


def load(url: str, raw: bytes, concurrency: int, n: int) -> None:
    """Sends the ready-made HTTP request `raw` n times over `concurrency` keep-alive connections, each
    sending its next request as soon as its answer is read: asyncio in one thread, so that all of
    them are in flight all the time (32 threads with http.client held the GIL in turns: fewer
    requests were in flight, and the client took more of the cores it shares with the server).
    Raises RuntimeError on an answer that is not a 200."""
    port = int(url.rsplit(":", 1)[1])

    async def connection(left: list[int]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left[0] > 0:
                left[0] -= 1
                writer.write(raw)
                status, body = await answer(reader)
                if status != 200:
                    raise RuntimeError(f"answered {status}: {body[:200]!r}")
        finally:
            writer.close()

    async def run() -> None:
        left = [n]
        await asyncio.gather(*(connection(left) for _ in range(min(concurrency, n))))
    asyncio.run(run())


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 answer: its status and body (Content-Length, or chunked: BentoML streams some)."""
    head = await reader.readuntil(b"\r\n\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])}
    if b"content-length" in fields:
        body = await reader.readexactly(int(fields[b"content-length"]))
    else:
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append((await reader.readexactly(size + 2))[:-2])
        await reader.readuntil(b"\r\n")                      # the last chunk's empty trailer
        body = b"".join(chunks)
    return int(head.split(b" ", 2)[1]), body


def stop(procs, grace_s: float = 30.0) -> None:
    """SIGTERM to each server's process group, then SIGKILL to whatever of the group is left once the
    server exited or `grace_s` passed (an arbiter whose workers crash at start-up may not stop on
    SIGTERM, and a leftover worker would skew every later measurement)."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
