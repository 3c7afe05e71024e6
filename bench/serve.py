"""Serving speed, measured side by side in one run: HTTP latency vs the raw model forward time.

    make bench        # = python bench/serve.py [--requests 200]

Serves the champions in models/serving.json with `bentoml serve` on a free loopback port, then
1. raw forward: the service's own model call (both models, flip averaging) on one photo, in-process;
2. latency at concurrency 1: p50 / p99 of POST /predict;
3. throughput at concurrency 1, 8 and 32 (adaptive batching merges concurrent requests);
4. the face step: decode + crop of a ~1 MP JPEG with and without finding the face, interleaved.
Targets: p50 <= raw forward + 5 ms; throughput at 32 >= 3x sequential; the face step adds <= 10 ms
p50 per 1 MP photo. Prints the ratios.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "service" / "example.jpg"


def raw_forward(photo: Path):
    """-> a function that runs the exact model call /predict makes (decode excluded) on one photo."""
    import bentoml
    import torch

    from pipeline.model import TaskModel, load_bundle, predict
    from pipeline.preprocess import load_uint8
    from service.service import THREADS

    torch.set_num_threads(THREADS)                    # as many threads as one server worker uses
    models, size, tta = {}, None, False
    for task in ("gender", "rating"):
        ref = bentoml.models.get(os.environ[f"FACES_{task.upper()}_MODEL"])
        models[task] = TaskModel(load_bundle(ref.path_of("model.pt"))[0], task).eval()
        size, tta = ref.info.metadata["image_size"], ref.info.metadata.get("tta_flip", False)
    x = load_uint8(photo, size, 10**8)[None]

    def forward() -> None:
        for m in models.values():
            predict(m, x, tta_flip=tta)

    for _ in range(20):                               # the first calls warm up allocator and caches
        forward()
    return forward


def megapixel_scene() -> bytes:
    """A ~1 MP phone-like JPEG (1152 x 864): a drawn face at ~30 % of the shorter side in clutter."""
    import io

    sys.path.insert(0, str(ROOT / "bench"))
    from wild import clutter

    from pipeline.synth import render_face, sample_face

    rng = np.random.default_rng(0)
    scene = clutter(rng, 1152, 864, blobs=0)
    scene.paste(render_face(sample_face(rng, 0.25), 360, rng), (600, 200))
    buf = io.BytesIO()
    scene.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def face_step(size: int, face, n: int, threads: int) -> tuple[list[float], list[float]]:
    """Alternates decode + centre crop and decode + face step + crop of one ~1 MP JPEG, n times, with
    the service's thread count -> (centre ms, face ms)."""
    import cv2

    from pipeline.preprocess import frame, open_image

    cv2.setNumThreads(threads)
    data = megapixel_scene()
    centre, faced = [], []
    for i in range(n + 10):
        t0 = time.perf_counter()
        frame(open_image(data, 10**8), size, None)
        t1 = time.perf_counter()
        frame(open_image(data, 10**8), size, face)
        t2 = time.perf_counter()
        if i >= 10:                                   # after warm-up
            centre.append((t1 - t0) * 1000)
            faced.append((t2 - t1) * 1000)
    return centre, faced


def side_by_side(url: str, photo: Path, forward, n: int) -> tuple[list[float], list[float]]:
    """Alternates one raw forward and one POST /predict, n times -> (raw ms, HTTP ms). Interleaving
    keeps both measurements in the same minutes: this VM's speed drifts by +-20 % between minutes."""
    raw, http = [], []
    send = requester(url, photo)
    for _ in range(n):
        t0 = time.perf_counter()
        forward()
        raw.append((time.perf_counter() - t0) * 1000)
        http.append(send())
    return raw, http


def serve() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bentoml = Path(sys.executable).parent / "bentoml"
    proc = subprocess.Popen([str(bentoml), "serve", "service.service:Faces", "--host", "127.0.0.1", "--port",
                             str(port)], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}: run `make serve` to see why")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError("bentoml serve did not become ready")


def multipart(path: Path) -> tuple[bytes, str]:
    """A ready-made multipart/form-data body with the photo in the field `image`, built once: the
    load generator shares the server's 2 cores, so it must spend as little CPU per request as it can."""
    boundary = "benchboundary7MA4YWxkTrZu0gW"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def requester(url: str, photo: Path):
    """-> a function that POSTs the photo to /predict on its own keep-alive connection (http.client:
    a fraction of httpx's CPU per request) and returns the latency in ms."""
    body, ctype = multipart(photo)
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def send() -> float:
        t0 = time.perf_counter()
        conn.request("POST", "/predict", body, {"Content-Type": ctype})
        r = conn.getresponse()
        payload = r.read()
        if r.status != 200:
            raise RuntimeError(f"/predict answered {r.status}: {payload[:200]!r}")
        return (time.perf_counter() - t0) * 1000

    return send


def throughput(url: str, photo: Path, concurrency: int, requests: int) -> float:
    """Requests per second with `concurrency` clients, each sending its next request on answer."""
    local = threading.local()

    def one(_):
        if not hasattr(local, "send"):
            local.send = requester(url, photo)
        return local.send()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(min(requests, 4 * concurrency))))          # warm-up
        t0 = time.perf_counter()
        list(pool.map(one, range(requests)))
        return requests / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (c=1, 8, 32 each); medians")
    ap.add_argument("--photo", type=Path, default=PHOTO, help="the JPEG to send (default: service/example.jpg)")
    args = ap.parse_args()
    serving = json.loads((ROOT / "models" / "serving.json").read_text())
    for task in ("gender", "rating"):
        os.environ.setdefault(f"FACES_{task.upper()}_MODEL", serving[task]["tag"])
    proc, url = serve()
    try:
        raw, lat = side_by_side(url, args.photo, raw_forward(args.photo), args.requests)
        rounds = [{c: throughput(url, args.photo, c, args.requests) for c in (1, 8, 32)} for _ in range(args.rounds)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    from pipeline.config import load_params
    from service.service import LIMITS as limits   # checked (sha256) once, at import
    from service.service import THREADS, WORKERS

    face = limits.face or load_params(ROOT / "params.yaml").ingest.face
    centre, faced = face_step(limits.image_size, face, args.requests, os.cpu_count() or 1)   # as the service

    p50, p99 = np.percentile(lat, [50, 99])
    rps = {c: statistics.median(r[c] for r in rounds) for c in (1, 8, 32)}
    ratio = statistics.median(r[32] / r[1] for r in rounds)
    print(f"cpu cores: {os.cpu_count()}, photo {args.photo.name}, {args.requests} requests per measurement")
    print(f"server: {WORKERS} workers x {THREADS} torch threads")
    print(f"raw forward (2 models, flip TTA, batch 1, {THREADS} threads): p50 {np.median(raw):7.2f} ms")
    print(f"HTTP /predict at concurrency 1:                   p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
    print(f"throughput (median of {args.rounds} rounds): c=1 {rps[1]:7.1f} req/s   c=8 {rps[8]:7.1f} req/s"
          f"   c=32 {rps[32]:7.1f} req/s")
    print(f"overhead p50 - raw forward: {p50 - np.median(raw):+.2f} ms (target <= +5 ms)")
    print(f"throughput ratio c=32 / c=1: {ratio:.2f}x, per round {', '.join(f'{r[32] / r[1]:.2f}' for r in rounds)}"
          " (target >= 3x)")
    served = "these models crop faces" if limits.face else "these models crop the centre; timed with params.yaml's"
    print(f"face step ({served}), 1152x864 JPEG, {os.cpu_count()} OpenCV threads, decode + crop p50: centre "
          f"{np.median(centre):.2f} ms, face {np.median(faced):.2f} ms -> the face step adds "
          f"{np.median(faced) - np.median(centre):+.2f} ms (target <= +10 ms)")


if __name__ == "__main__":
    main()
