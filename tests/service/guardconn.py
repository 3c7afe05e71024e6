"""Helpers for the guard's ASGI tests (test_guard.py, test_guard_admission.py): a scripted connection,
multipart parts, a guard on one route, an app that answers 200, and the autouse fixture both import."""
import asyncio

import pytest

import service.guard
from service.guard import UploadGuard
from service.requests import Route

ROUTE = Route(b"multipart/form-data", b"image", 1, 10_000, 5_000)
CTYPE = (b"content-type", b"multipart/form-data; boundary=XyZ")


def part(name: str, payload: bytes, filename: str | None = "a.jpg") -> bytes:
    extra = f'; filename="{filename}"' if filename else ""
    return (f'--XyZ\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + payload + b"\r\n"


class Conn:
    """One ASGI request: `chunks` are delivered by receive(); then it waits (or disconnects)."""

    def __init__(self, chunks=(b"",), hang_up_after_body=False, headers=None, path="/predict"):
        self.scope = {"type": "http", "method": "POST", "path": path, "headers": headers or [CTYPE]}
        self.chunks, self.hang_up = list(chunks), hang_up_after_body
        self.received, self.status, self.headers, self.body = 0, None, {}, b""
        self.gone = asyncio.Event()

    async def receive(self):
        self.received += 1
        if self.chunks:
            chunk = self.chunks.pop(0)
            if chunk is None:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}
        if self.hang_up:
            await self.gone.wait()
        else:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(self, msg):
        if msg["type"] == "http.response.start":
            self.status, self.headers = msg["status"], dict(msg["headers"])
        else:
            self.body += msg.get("body", b"")


def guard_of(app, max_inflight=2):
    return UploadGuard(app, {"/predict": ROUTE}, max_inflight=max_inflight, retry_after_s=3)


def ok_app(calls):
    async def app(scope, receive, send):
        calls.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
    return app


@pytest.fixture(autouse=True)
def restore_current_guard():
    """Every UploadGuard becomes `service.guard.CURRENT`, which the service's EarlyShed reads (one guard
    per worker process). A test's guard left there, full, made the session's in-process app shed every
    later request with a 503: each test puts back the one it found."""
    before = service.guard.CURRENT
    yield
    service.guard.CURRENT = before
