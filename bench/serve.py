"""Serving speed, measured side by side in one run: HTTP latency vs the raw model forward time.

    make bench        # = python bench/serve.py [--requests 200]

Serves the champions in models/serving.json with `bentoml serve` on a free loopback port, then
1. raw forward: the service's own model call (both models, flip averaging) on one photo, in-process;
2. latency at concurrency 1: p50 / p99 of POST /predict;
3. throughput at concurrency 1, 8 and 32 (adaptive batching merges concurrent requests).
Targets: p50 <= raw forward + 5 ms; throughput at 32 >= 3x sequential. Prints the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "service" / "example.jpg"


def raw_forward_ms(repeats: int = 200) -> float:
    """Median time of the exact model call /predict makes (decode excluded), batch of one photo."""
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
    x = load_uint8(PHOTO, size, 10**8)[None]
    times = []
    for i in range(repeats + 20):
        t0 = time.perf_counter()
        for m in models.values():
            predict(m, x, tta_flip=tta)
        if i >= 20:                                   # the first calls warm up allocator and caches
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


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
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError("bentoml serve did not become ready")


def load(url: str, concurrency: int, requests: int) -> tuple[float, list[float]]:
    """-> (requests per second, per-request latencies in ms)."""
    data = PHOTO.read_bytes()
    client = httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=concurrency))

    def one(_):
        t0 = time.perf_counter()
        r = client.post("/predict", files={"image": ("face.jpg", data, "image/jpeg")})
        r.raise_for_status()
        return (time.perf_counter() - t0) * 1000

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(min(requests, 4 * concurrency))))          # warm-up
        t0 = time.perf_counter()
        lat = list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - t0
    client.close()
    return requests / elapsed, lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    serving = json.loads((ROOT / "models" / "serving.json").read_text())
    for task in ("gender", "rating"):
        os.environ.setdefault(f"FACES_{task.upper()}_MODEL", serving[task]["tag"])
    proc, url = serve()
    try:
        raw = raw_forward_ms()
        rps1, lat = load(url, 1, args.requests)
        p50, p99 = np.percentile(lat, [50, 99])
        results = {c: load(url, c, args.requests)[0] for c in (8, 32)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    print(f"cpu cores: {os.cpu_count()}, photo {PHOTO.name}, {args.requests} requests per level")
    from service.service import THREADS, WORKERS

    print(f"server: {WORKERS} workers x {THREADS} torch threads")
    print(f"raw forward (2 models, flip TTA, batch 1, {THREADS} threads): {raw:7.2f} ms")
    print(f"HTTP /predict at concurrency 1: p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
    print(f"throughput: c=1 {rps1:7.1f} req/s   c=8 {results[8]:7.1f} req/s   c=32 {results[32]:7.1f} req/s")
    print(f"overhead p50 - raw forward: {p50 - raw:+.2f} ms (target <= +5 ms)")
    print(f"throughput ratio c=32 / c=1: {results[32] / rps1:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
