"""Hostile-traffic checks against a real `bentoml serve` on loopback: fuzz, soak, overload, hang-ups.

    make hardening          # = python bench/hardening.py (full form, ~3 min; figures in the README)
    python bench/hardening.py --fuzz 300 --soak 10 --overload 5 --hangups 100     # the CI form

1. fuzz: a generated corpus of malformed requests (bench/hostile.py) -> no 5xx, every answer a JSON
   4xx (odd but valid photos may be 200; HTTP that uvicorn cannot parse gets uvicorn's own
   plain-text 400 before any ASGI code runs: counted apart), /livez healthy throughout, no restarts.
2. soak: valid photos on /predict and /predict_batch at concurrency 32 -> no errors, worker RSS
   growth after warm-up and open file descriptors reported.
3. overload: 4x the measured capacity, open loop -> excess answered 503 + Retry-After fast, p99 of
   accepted requests, and the time until a lone request is served normally again.
4. hang-ups: clients that close mid-upload or while queued -> in-flight back to 0, photos of
   mid-upload hang-ups never reach the model.
5. an attacker's phases (bench/siege.py over bench/attacks.py): crafted requests per class with
   /livez and /predict timed meanwhile, /infer at 64 concurrent, 100 slow senders beside ordinary
   traffic, idle and half-header connections, unknown paths against /metrics, and worker memory
   `--settle` seconds after it all against its warm size (after the soak).
6. with --schemathesis: property-based requests generated from the OpenAPI document -> no 5xx.
Only 127.0.0.1; every loop is bounded in count and time. Serves models/serving.json's champions
unless FACES_GENDER_MODEL / FACES_RATING_MODEL are set.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))
import siege  # noqa: E402
from hostile import corpus, photo_request, send  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTO = (ROOT / "service" / "example.jpg").read_bytes()
# the one text/plain answer: uvicorn's to HTTP it cannot parse, given before any ASGI code runs
OUTSIDE_THE_APP = {(400, b"Invalid HTTP request received.")}


def workers(server_pid: int) -> dict[int, psutil.Process]:
    """The server's worker processes (children that run the service), by pid."""
    kids = psutil.Process(server_pid).children(recursive=True)
    return {p.pid: p for p in kids if "worker" in " ".join(p.cmdline()) or "_bentoml_impl" in " ".join(p.cmdline())}


def rss_mb(procs: dict[int, psutil.Process]) -> dict[int, float]:
    return {pid: p.memory_info().rss / 2**20 for pid, p in procs.items()}


def metric(port: int, name: str, label: str = "") -> float:
    """Sum of a Prometheus series over all workers (e.g. faces_guard_events_total, 'client_gone')."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and label in line and not line.startswith("#"))


async def _pool(jobs, concurrency: int, run) -> list:
    sem = asyncio.Semaphore(concurrency)

    async def one(job):
        async with sem:
            return await run(job)
    return await asyncio.gather(*(one(j) for j in jobs))


def fuzz(port: int, server_pid: int, n: int, concurrency: int = 8) -> dict:
    before = set(workers(server_pid))
    cases = corpus(n)
    peak: dict[int, float] = {}
    bad, statuses, live_fail, http_layer = [], {}, 0, 0

    async def run(case):
        nonlocal live_fail, http_layer
        label, raw, expect = case
        status, body, _ = await send(port, raw)
        statuses[status] = statuses.get(status, 0) + 1
        try:
            is_json = "error" in json.loads(body) if status != 200 else True
        except ValueError:
            is_json = False
        if (status, body) in OUTSIDE_THE_APP:     # unparsable HTTP: answered before any ASGI code
            http_layer += 1
            is_json = True
        if status >= 500 or status == 0 or not is_json or (expect == "4xx" and not 400 <= status < 500):
            bad.append((label, status, body[:120]))
        if sum(statuses.values()) % 100 == 0:
            live, _, _ = await send(port, b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            live_fail += live != 200
            for pid, mb in rss_mb(workers(server_pid)).items():
                peak[pid] = max(peak.get(pid, 0), mb)

    asyncio.run(_pool(cases, concurrency, run))
    after = set(workers(server_pid))
    return {"requests": len(cases), "statuses": dict(sorted(statuses.items())), "unexpected": bad[:20],
            "n_unexpected": len(bad), "five_xx": sum(v for k, v in statuses.items() if k >= 500),
            "livez_failures": live_fail, "worker_restarts": len(before ^ after), "uvicorn_plain_400": http_layer,
            "peak_rss_mb": max(peak.values(), default=0.0)}


def soak(port: int, server_pid: int, seconds: float, concurrency: int = 32) -> dict:
    raws = [photo_request("/predict", [PHOTO]), photo_request("/predict_batch", [PHOTO] * 4)]
    procs = workers(server_pid)
    fds = lambda: sum(p.num_fds() for p in procs.values())  # noqa: E731
    marks, codes = {}, {}
    t_end = time.monotonic() + seconds
    warm = time.monotonic() + seconds / 3          # RSS levels off within ~10 s (docs/reliability.md)

    async def client(i):
        while time.monotonic() < t_end:
            status, _, _ = await send(port, raws[i % 2])
            codes[status] = codes.get(status, 0) + 1
            if "warm" not in marks and time.monotonic() >= warm:
                marks["warm"] = (rss_mb(procs), fds())

    fds0 = fds()
    asyncio.run(_pool(range(concurrency), concurrency, client))
    rss_warm, fds_warm = marks.get("warm", (rss_mb(procs), fds0))
    rss_end = rss_mb(procs)
    time.sleep(2)                       # closed connections' sockets are released asynchronously
    growth = max((rss_end[p] - rss_warm[p]) / rss_warm[p] for p in rss_end)
    return {"seconds": seconds, "concurrency": concurrency, "statuses": codes,
            "errors": sum(v for k, v in codes.items() if k != 200), "rss_warm_mb": rss_warm, "rss_end_mb": rss_end,
            "rss_growth": growth, "fds": [fds0, fds_warm, fds()]}


def capacity(port: int, seconds: float = 5.0, concurrency: int = 32) -> float:
    """Accepted /predict requests per second, closed loop."""
    raw, done = photo_request("/predict", [PHOTO]), [0]
    t_end = time.monotonic() + seconds

    async def client(_):
        while time.monotonic() < t_end:
            status, _, _ = await send(port, raw)
            done[0] += status == 200

    t0 = time.monotonic()
    asyncio.run(_pool(range(concurrency), concurrency, client))
    return done[0] / (time.monotonic() - t0)


def overload(port: int, rate: float, seconds: float) -> dict:
    """Open loop: a request every 1/rate s for `seconds` (each on its own connection), then how
    long until a lone request is answered 200 in under 2x its unloaded latency again."""
    raw = photo_request("/predict", [PHOTO])
    accepted, shed, other = [], [], {}

    async def one():
        try:
            status, _, dt = await send(port, raw, timeout=30)
        except (TimeoutError, OSError):
            status, dt = -1, 0.0
        if status == 200:
            accepted.append(dt)
        elif status == 503:
            shed.append(dt)
        else:
            other[status] = other.get(status, 0) + 1

    async def drive():
        tasks, t0, i = [], time.monotonic(), 0
        while (now := time.monotonic()) < t0 + seconds:
            while i < (now - t0) * rate:
                tasks.append(asyncio.ensure_future(one()))
                i += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        return i

    base = min(asyncio.run(send(port, raw))[2] for _ in range(5))
    sent = asyncio.run(drive())
    t_stop, recovered = time.monotonic(), None
    while time.monotonic() - t_stop < 30:
        status, _, dt = asyncio.run(send(port, raw))
        if status == 200 and dt < 2 * base + 0.01:
            recovered = time.monotonic() - t_stop
            break
        time.sleep(0.1)
    pct = lambda xs, q: 1000 * statistics.quantiles(xs, n=100)[q - 1] if len(xs) >= 2 else float("nan")  # noqa: E731
    return {"offered_rps": rate, "seconds": seconds, "sent": sent, "accepted": len(accepted), "shed_503": len(shed),
            "other": other, "accepted_p50_ms": pct(accepted, 50), "accepted_p99_ms": pct(accepted, 99),
            "shed_p50_ms": pct(shed, 50), "shed_p99_ms": pct(shed, 99), "recovered_s": recovered,
            "unloaded_ms": 1000 * base}


def hangups(port: int, n: int) -> dict:
    """n/2 clients close mid-upload, n/2 right after sending a whole request (while it queues)."""
    raw = photo_request("/predict_batch", [PHOTO] * 4)
    photos0 = metric(port, "faces_predict_batch_size_sum")

    async def half(_):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw[: len(raw) // 2])
        await writer.drain()
        writer.close()

    async def whole(_):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(0.005)
        writer.close()

    asyncio.run(_pool(range(n // 2), 64, half))
    time.sleep(1.0)
    mid_upload_photos = metric(port, "faces_predict_batch_size_sum") - photos0
    asyncio.run(_pool(range(n // 2), 64, whole))
    deadline, inflight = time.monotonic() + 15, None
    while time.monotonic() < deadline:
        inflight = metric(port, "faces_inflight_requests")
        if inflight == 0:
            break
        time.sleep(0.2)
    queued_photos = metric(port, "faces_predict_batch_size_sum") - photos0 - mid_upload_photos
    before_control = metric(port, "faces_predict_batch_size_sum")
    status, _, _ = asyncio.run(send(port, raw))          # a control: the photo counter does count
    return {"clients": n, "photos_from_mid_upload_hangups": mid_upload_photos,
            "photos_from_queued_hangups": queued_photos, "photos_sent_by_queued_hangups": 4 * (n // 2),
            "inflight_after": inflight, "control_status": status,
            "control_photos_counted": metric(port, "faces_predict_batch_size_sum") - before_control,
            "client_gone_events": metric(port, "faces_guard_events_total", 'event="client_gone"')}


def schema(url: str, st: str, max_examples: int, seed: int = 0) -> dict:
    """schemathesis over the OpenAPI document (/docs.json): generated requests for every operation;
    the property checked is "no 5xx" (`not_a_server_error`). Bounded: `max_examples` per
    operation and phase, 30 s per request, 600 s in all."""
    p = subprocess.run([st, "run", f"{url}/docs.json", "--checks", "not_a_server_error", "--max-examples",
                        str(max_examples), "--request-timeout", "30", "--seed", str(seed), "--no-color"],
                       capture_output=True, text=True, timeout=600)
    cases = next((line.strip() for line in p.stdout.splitlines() if re.match(r"\s*\d+ generated", line)), "")
    return {"exit_code": p.returncode, "test_cases": cases, "tail": p.stdout[-1500:] if p.returncode else ""}


def attacker(report: dict, port: int, server_pid: int, args) -> None:
    """The attacker's phases (bench/siege.py), then worker memory against its size after the soak."""
    import bentoml

    size = bentoml.models.get(os.environ["FACES_GENDER_MODEL"]).info.metadata["image_size"]
    report["crafted"] = siege.crafted(port, PHOTO, repeat=args.crafted)
    report["infer_burst"] = siege.infer_burst(port, size)
    report["slow"] = siege.slow(port, PHOTO, n=args.slow)
    report["idle"] = siege.idle(port)
    report["metrics"] = siege.metrics(port)
    after = rss_mb(workers(server_pid))
    time.sleep(args.settle)
    settled = rss_mb(workers(server_pid))
    warm = report["soak"]["rss_end_mb"]
    report["memory"] = {"warm_mb": warm, "after_attacks_mb": after, f"after_{args.settle:g}s_mb": settled,
                        "growth_mb": max(settled[p] - warm.get(p, settled[p]) for p in settled)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fuzz", type=int, default=2500, help="malformed requests")
    ap.add_argument("--soak", type=float, default=60, help="seconds of valid traffic at concurrency 32")
    ap.add_argument("--overload", type=float, default=30, help="seconds at 4x capacity")
    ap.add_argument("--hangups", type=int, default=400, help="clients that hang up")
    ap.add_argument("--crafted", type=int, default=3, help="rounds of the crafted corpus (bench/attacks.py)")
    ap.add_argument("--slow", type=int, default=100, help="slow senders")
    ap.add_argument("--settle", type=float, default=30, help="seconds before worker memory is measured again")
    ap.add_argument("--schemathesis", default="", help="path of schemathesis' `st` (make hardening makes one)")
    args = ap.parse_args()
    from servers import serve, use_champions  # bentoml serve on a free loopback port

    use_champions()
    proc, url = serve()
    port = int(url.rsplit(":", 1)[1])
    report = {}
    try:
        report["fuzz"] = fuzz(port, proc.pid, args.fuzz)
        report["soak"] = soak(port, proc.pid, args.soak)
        report["capacity_rps"] = cap = capacity(port)
        report["overload"] = overload(port, 4 * cap, args.overload)
        report["hangups"] = hangups(port, args.hangups)
        attacker(report, port, proc.pid, args)
        if args.schemathesis:
            report["schemathesis"] = schema(url, args.schemathesis, max_examples=200)
    finally:
        print(json.dumps(report, indent=1, default=str), flush=True)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
            print(f"server stopped {time.monotonic() - t0:.1f} s after SIGTERM")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            print("server still running 30 s after SIGTERM: killed")

if __name__ == "__main__":
    main()
