"""What the load balancer retries (deploy/haproxy/haproxy.cfg), shown against two stub replicas on loopback:

    python deploy/lb_retries.py --start "docker run -d --network host -e LB_PORT={lb} -e REPLICA_A=127.0.0.1:{a} \
        -e REPLICA_B=127.0.0.1:{b} --name lb faces-haproxy:test" --stop "docker rm -f lb"   (make compose-test)

Replica A answers every /predict with the service's overload answer (503 + Retry-After), B with 200.
1. A 503 goes back to the client, and A saw every such request exactly once: the balancer does not
   resend an overloaded replica's work to another (a retry there multiplies the load when every
   replica is busy; the client backs off as Retry-After says).
2. Then A stops listening: requests sent before the health check notices (fall 2, inter 1 s) meet a
   refused connection, and the balancer retries them on B: every one is a 200.
Prints a JSON summary; exits 1 when either does not hold. Bounded: 40 + 40 requests, 30 s each at most.
"""
from __future__ import annotations

import argparse
import json
import shlex
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stub(status: int) -> tuple[ThreadingHTTPServer, list[str]]:
    """A replica on loopback that answers /readyz 200 and /predict `status` -> (server, POSTs it saw)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):                                   # noqa: N802 - http.server's name
            self._answer(200, b"ok")

        def do_POST(self):                                  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append(self.path)
            self._answer(status, b'{"error": "overloaded"}' if status == 503 else b'{"gender": "male", "rating": 3}')

        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            if code == 503:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda *a: None                   # type: ignore[method-assign]  # health checks hang up
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def _send(lb: str, n: int) -> list[int]:
    with httpx.Client(timeout=30) as client:
        return [client.post(f"{lb}/predict", files={"image": ("f.jpg", b"x" * 1000, "image/jpeg")}).status_code
                for _ in range(n)]


def _wait_ready(lb: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{lb}/readyz", timeout=2).status_code == 200:
                time.sleep(3)                               # both servers up: rise 2 checks, 1 s apart
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"lb_retries: {lb} did not answer in {seconds:.0f} s")


def run(start: str, stop: str, n: int = 40) -> dict:
    (a, a_seen), (b, b_seen) = stub(503), stub(200)
    lb_port = _free_port()
    lb = f"http://127.0.0.1:{lb_port}"
    cmd = start.format(lb=lb_port, a=a.server_address[1], b=b.server_address[1])
    subprocess.run(shlex.split(cmd), check=True, capture_output=True, timeout=60)
    try:
        _wait_ready(lb)
        overloaded = _send(lb, n)
        a_before, b_before = len(a_seen), len(b_seen)
        a.shutdown()
        a.server_close()                                    # A refuses connections from now on
        refused = _send(lb, n)
    finally:
        subprocess.run(shlex.split(stop), capture_output=True, timeout=60)
    return {"overloaded": {"503": overloaded.count(503), "200": overloaded.count(200),
                           "a_saw": a_before, "b_saw": b_before},
            "a_refusing": {"200": refused.count(200), "other": len(refused) - refused.count(200),
                           "b_saw": len(b_seen) - b_before}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", required=True, help="starts the balancer; {lb} {a} {b}: its port and the replicas'")
    ap.add_argument("--stop", required=True)
    args = ap.parse_args()
    res = run(args.start, args.stop)
    print(json.dumps(res, indent=1))
    o, r = res["overloaded"], res["a_refusing"]
    ok = (o["503"] > 0 and o["503"] == o["a_saw"] and o["200"] == o["b_saw"] and o["503"] + o["200"] == 40
          and r["200"] == 40 and r["b_saw"] == 40)
    if not ok:
        print("lb_retries: FAILED (a 503 was retried on the other replica, or a refused connection was not)",
              file=sys.stderr)
        sys.exit(1)
    print(f"lb_retries: OK ({o['503']} overload answers passed through unretried; "
          f"{r['200']}/40 requests to a refusing replica retried to a 200)")


if __name__ == "__main__":
    main()
