"""The attacker's phases of bench/hardening.py (the corpus: bench/attacks.py). Each returns a dict of
figures; the targets are checked by tests/service/test_hardening.py (short form) and printed by
`make hardening` (full form, figures in docs/reliability.md).

- crafted:  every crafted case, a few at a time, while a prober times /livez on new connections and
            ordinary /predict requests -> per class: statuses, 5xx, slowest answer; probe p50/p99.
- slow:     n clients that send headers and then a body byte per second, while legitimate
            requests run -> those all answered; what the slow ones got (408 when their read
            deadline passed; 503 for those that arrived in one burst beyond max_inflight) and when.
- idle:     n idle and n half-header connections -> seconds until the server has closed them all.
- metrics:  /metrics size before and after requests to unknown paths.
- memory:   worker RSS warm, right after the hostile traffic, and `settle_s` later.
Only 127.0.0.1; every loop is bounded in count and time.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time

import httpx
from attacks import corpus
from hostile import photo_request, send


def _q(xs: list[float], q: int) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=100)[q - 1]


async def _probe(port: int, photo: bytes, stop: asyncio.Event) -> dict:
    """/livez on a new connection every 0.1 s and a /predict every 0.3 s until `stop`."""
    live, pred, pred_bad = [], [], []
    raw = photo_request("/predict", [photo])

    async def livez():
        while not stop.is_set():
            st, _, dt = await send(port, b"GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 30)
            live.append(dt if st == 200 else 99.0)
            await asyncio.sleep(0.1)

    async def predict():
        while not stop.is_set():
            st, _, dt = await send(port, raw, 30)
            (pred if st == 200 else pred_bad).append(dt)
            await asyncio.sleep(0.3)
    await asyncio.gather(livez(), predict())
    return {"livez_n": len(live), "livez_p50_s": _q(live, 50), "livez_p99_s": _q(live, 99), "livez_max_s": max(live),
            "predict_n": len(pred), "predict_p99_s": _q(pred, 99), "predict_max_s": max(pred, default=0.0),
            "predict_not_200": len(pred_bad)}


def crafted(port: int, photo: bytes, mb: float = 9.0, concurrency: int = 3, repeat: int = 1) -> dict:
    cases = corpus(mb) * repeat
    by_class: dict[str, dict] = {}
    bad: list = []

    async def one(case):
        cls, label, raw, expect = case
        try:
            status, body, dt = await send(port, raw, 60)
        except (TimeoutError, OSError):
            status, body, dt = -1, b"", 60.0
        try:
            is_json = "error" in json.loads(body) if status != 200 else True
        except ValueError:
            is_json = False
        c = by_class.setdefault(cls, {"n": 0, "statuses": {}, "slowest_s": 0.0, "slowest": ""})
        c["n"] += 1
        c["statuses"][status] = c["statuses"].get(status, 0) + 1
        if dt > c["slowest_s"]:
            c["slowest_s"], c["slowest"] = round(dt, 3), label
        if status >= 500 or status <= 0 or not is_json or (expect == "4xx" and not 400 <= status < 500):
            bad.append((label, status, body[:100]))

    async def run():
        stop, sem = asyncio.Event(), asyncio.Semaphore(concurrency)

        async def limited(case):
            async with sem:
                await one(case)
        prober = asyncio.ensure_future(_probe(port, photo, stop))
        await asyncio.gather(*(limited(c) for c in cases))
        stop.set()
        return await prober
    probe = asyncio.run(run())
    return {"requests": len(cases), "classes": by_class, "unexpected": bad[:20], "n_unexpected": len(bad),
            "five_xx": sum(v for c in by_class.values() for k, v in c["statuses"].items() if k >= 500), **probe}


def slow(port: int, photo: bytes, n: int = 100, legit: int = 60, hold_s: float = 40.0) -> dict:
    """n slow senders (a body byte per second) and `legit` ordinary requests (4 at a time) meanwhile."""
    raw = photo_request("/predict", [photo])
    head, body = raw.split(b"\r\n\r\n", 1)
    cut: list[float] = []
    slow_codes: dict[str, int] = {}

    async def slow_client():
        t0, answer = time.monotonic(), b""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head + b"\r\n\r\n")
            for i in range(int(hold_s)):
                writer.write(body[i:i + 1])
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(reader.read(12), 1.0)
                    if answer or reader.at_eof():
                        break                           # answered (408, or 503 when it came in a burst) or closed
        except ConnectionError:
            pass
        finally:
            cut.append(time.monotonic() - t0)
            code = answer[9:12].decode() or "closed"
            slow_codes[code] = slow_codes.get(code, 0) + 1
            writer.close()

    async def run():
        slows = [asyncio.ensure_future(slow_client()) for _ in range(n)]
        await asyncio.sleep(2.0)                      # all connected and trickling
        sem, codes, times = asyncio.Semaphore(4), {}, []

        async def one(_):
            async with sem:
                st, _, dt = await send(port, raw, 30)
                codes[st] = codes.get(st, 0) + 1
                times.append(dt)
        await asyncio.gather(*(one(i) for i in range(legit)))
        await asyncio.gather(*slows)
        return codes, times
    codes, times = asyncio.run(run())
    return {"slow_clients": n, "legit": legit, "legit_statuses": codes, "legit_p99_s": _q(times, 99),
            "slow_answers": slow_codes, "slow_cut_after_s": {"min": min(cut), "max": max(cut)}}


def idle(port: int, n: int = 40, limit_s: float = 45.0) -> dict:
    """n connections that send nothing and n that send half a request head -> when each was closed."""
    async def one(data: bytes) -> float:
        t0 = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(reader.read(), limit_s)
        writer.close()
        return time.monotonic() - t0

    async def run():
        return await asyncio.gather(*(one(b"" if i % 2 else b"GET /livez HTTP/1.1\r\nHo") for i in range(2 * n)))
    closed = asyncio.run(run())
    return {"connections": 2 * n, "closed_after_max_s": round(max(closed), 2), "still_open": sum(c >= limit_s for c in closed)}


def metrics(port: int, n: int = 500) -> dict:
    url = f"http://127.0.0.1:{port}"
    before = len(httpx.get(f"{url}/metrics", timeout=10).content)
    with httpx.Client(timeout=10) as c:
        for i in range(n):
            c.get(f"{url}/nowhere/{i}/{'x' * 64}")
            c.get(f"{url}/static_content/{i}.css")
    after = len(httpx.get(f"{url}/metrics", timeout=10).content)
    return {"unknown_paths": n, "metrics_bytes_before": before, "metrics_bytes_after": after}


def infer_burst(port: int, size: int, n: int = 300, concurrency: int = 64) -> dict:
    """/infer at high concurrency: every answer a 200 or the guard's 503 + Retry-After (BentoML's
    dispatcher used to answer its own 503 with a generic body)."""
    import base64

    body = json.dumps({"pixels": [base64.b64encode(bytes(size * size * 3)).decode()]}).encode()
    raw = (b"POST /infer HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    codes: dict[int, int] = {}
    foreign: list = []

    async def one(_):
        st, text, _ = await send(port, raw, 60)
        codes[st] = codes.get(st, 0) + 1
        if st == 503 and b"retry later" not in text:
            foreign.append(text[:100])

    async def run():
        sem = asyncio.Semaphore(concurrency)

        async def limited(i):
            async with sem:
                await one(i)
        await asyncio.gather(*(limited(i) for i in range(n)))
    asyncio.run(run())
    return {"requests": n, "concurrency": concurrency, "statuses": codes, "foreign_503": foreign[:5]}
