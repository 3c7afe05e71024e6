"""Traffic through the load balancer while one replica is stopped: no request may fail for good.

    python deploy/failover.py --lb http://127.0.0.1:3100 --replicas http://127.0.0.1:3101 http://127.0.0.1:3102 \
        --stop "docker-compose -f deploy/compose.yaml -p faces stop replica-a" [--requests 240] [--concurrency 8]

Sends `--requests` POST /predict of one photo from `--concurrency` threads (bounded in count and in
`--deadline` seconds). After a third of them has been answered it checks that both replicas served
some (their own /metrics), then runs `--stop` while the rest are in flight. A client retries a
request at most twice, on a connection error or a 502/503/504 (what a client of any replicated
service must do); every request must end in a 200 with a valid answer. Prints a JSON summary and
exits 1 when any request failed.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

RETRY_STATUS = {502, 503, 504}


def served(replica: str) -> float:
    """How many /predict requests a replica has answered (BentoML's request counter)."""
    text = urllib.request.urlopen(f"{replica}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(r'^bentoml_service_request_total\{[^}]*endpoint="/predict"[^}]*\} (\S+)',
                                            text, re.M))


def one(client: httpx.Client, url: str, photo: bytes, attempts: int = 3) -> dict:
    """One request with up to `attempts` tries -> {status, tries, error}."""
    last: dict = {}
    for i in range(attempts):
        try:
            r = client.post(url, files={"image": ("face.jpg", photo, "image/jpeg")})
            last = {"status": r.status_code, "tries": i + 1}
            if r.status_code == 200:
                body = r.json()
                ok = body.get("gender") in ("female", "male") and 1 <= body.get("rating", 0) <= 5
                return {**last, "error": None if ok else f"bad answer {body}"}
            if r.status_code not in RETRY_STATUS:
                return {**last, "error": r.text[:200]}
        except httpx.HTTPError as e:
            last = {"status": None, "tries": i + 1, "error": type(e).__name__}
        time.sleep(0.3 * (i + 1))
    return {**last, "error": last.get("error") or f"status {last.get('status')}"}


def run(lb: str, replicas: list[str], stop: str, photo: bytes, requests: int, concurrency: int,
        deadline_s: float) -> dict:
    done: list[dict] = []
    lock, stop_at = threading.Lock(), max(1, requests // 3)
    state: dict = {"stopped_after": None, "served_before_stop": None}
    t0 = time.monotonic()

    def worker(_: int) -> None:
        if time.monotonic() - t0 > deadline_s:
            with lock:
                done.append({"status": None, "tries": 0, "error": "deadline"})
            return
        with httpx.Client(timeout=30) as client:
            res = one(client, f"{lb}/predict", photo)
        with lock:
            done.append(res)
            trigger = len(done) == stop_at
        if trigger:                              # mid-load: both replicas have served, then one goes
            state["served_before_stop"] = {r: served(r) for r in replicas}
            state["stopped_after"] = stop_at
            subprocess.run(shlex.split(stop), check=True, capture_output=True, timeout=60)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(requests)))
    failed = [d for d in done if d["error"]]
    after = {}
    for r in replicas:                           # the stopped one must be down, the other served the rest
        try:
            after[r] = served(r)
        except OSError:
            after[r] = None
    return {"served_after": after,"requests": len(done), "ok": len(done) - len(failed), "failed": len(failed),
            "retried": sum(d["tries"] > 1 for d in done), "failures": failed[:5],
            "seconds": round(time.monotonic() - t0, 1), **state}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lb", required=True)
    ap.add_argument("--replicas", nargs=2, required=True)
    ap.add_argument("--stop", required=True, help="the command that stops one replica")
    ap.add_argument("--photo", type=Path, default=Path("service/example.jpg"))
    ap.add_argument("--requests", type=int, default=240)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--deadline", type=float, default=240)
    args = ap.parse_args()
    res = run(args.lb, args.replicas, args.stop, args.photo.read_bytes(), args.requests, args.concurrency,
              args.deadline)
    print(json.dumps(res, indent=1))
    before, after = res["served_before_stop"] or {}, list(res["served_after"].values())
    if res["failed"] or len(before) != 2 or min(before.values()) == 0 or after.count(None) != 1:
        print("failover: FAILED (a request failed, the balancer did not use both replicas, or the stop "
              "did not stop exactly one)", file=sys.stderr)
        sys.exit(1)
    print(f"failover: OK ({res['ok']}/{res['requests']} answered, {res['retried']} after a retry)")


if __name__ == "__main__":
    main()
