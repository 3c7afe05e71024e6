"""The service's front door for the model routes: admission, strict request checks, client hang-ups.

An ASGI middleware in front of BentoML's handlers for POST /predict, /predict_batch and /infer
(the checks of points 2-4 are service/requests.py):
1. Admission: at most `max_inflight` requests per worker are being decoded, queued or in the model,
   and at most `max_reading` bodies are arriving; past either, 503 + Retry-After at once, before
   the body is read. A body being received holds no model-side slot (a slow sender costs its bytes,
   within `max_buffered_mb` for all of them, and at most `read_timeout_s`).
2. Headers: exactly one Content-Type with exactly the route's media type (BentoML matches the media
   type byte for byte and parses anything else as JSON, so a looser check here is a bypass); at
   most one Content-Length, and a body over the route's limit is a 413 before a byte is read.
3. Body: read into one growing buffer (linear), stopped at the limit (413) or when it is not all
   there within `read_timeout_s` (408).
4. Multipart: parsed with python-multipart (the parser BentoML's Starlette uses, so both read the
   same parts) *as it streams in*: every part must be a non-empty *file* (`filename=`) in the
   route's one field, with an image or octet-stream type, within the per-file size; the part after
   the last allowed one is refused before its bytes arrive.
   The checked files' bytes go on in the scope (`requests.PHOTOS`), for service/direct.py.
5. Hang-ups: a client that disconnects while its request waits is detected and its handler is
   cancelled, so its photos never reach the model (service/batcher.py skips cancelled ones).
Anything refused gets a JSON 4xx `{"error": ...}` with `Connection: close` (the rest of a refused
body is never read) and one WARNING log line (route, status, reason);
service/logs.py does the same for BentoML's own 4xx. On every other route, Starlette's plain-text
404 / 405 become JSON too (service/outer.py `json_routing_errors`).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence

from service.outer import json_routing_errors
from service.requests import PHOTOS, PartsCheck, Refused, Route, check_headers, normalised

log = logging.getLogger("faces.guard")
SLOW_AFTER_S = 0.5      # a body still arriving after this stops counting against max_inflight


class UploadGuard:
    """ASGI middleware; `routes` maps a path to its Route; `metrics` gets admission counts; `idle` is
    called (at most every few seconds) when no request is being read or processed."""

    def __init__(self, app, routes: dict[str, Route], max_inflight: int, retry_after_s: int,
                 read_timeout_s: float = 15.0, max_reading: int = 256, max_buffered_mb: float = 256,
                 metrics=None, idle=None, photos_only: bool = False):
        self.app, self.routes, self.max_inflight = app, routes, max_inflight
        # multipart routes hand on their checked files only (scope[PHOTOS]) and replay an empty body:
        # the service answers from the files (service/direct.py), so a body is held once, not twice
        self.photos_only = photos_only
        self.read_timeout, self.max_reading = read_timeout_s, max_reading
        self.max_buffered = int(max_buffered_mb * 2**20)
        self.retry_after = str(retry_after_s).encode()
        self.metrics, self.idle = metrics, idle
        self.inflight = self.reading = self.fast_reading = self.buffered = 0
        self._shed, self._shed_logged, self._idle_at, self._idle_pending = 0, 0.0, 0.0, False
        global CURRENT
        CURRENT = self                      # one per worker process: EarlyShed reads its counts

    def overloaded(self) -> bool:
        """The model side plus the bodies arriving at full speed fill max_inflight, or too many bodies
        are arriving at all: a new request is shed before its body is read."""
        return self.inflight + self.fast_reading >= self.max_inflight or self.reading >= self.max_reading

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = self.routes.get(scope["path"])
        if route is None or scope["method"] != "POST":
            return await self.app(scope, receive, json_routing_errors(send))
        path = scope["path"]
        if self.overloaded():
            return await self._shed_one(send, path)
        self.reading += 1
        self.fast_reading += 1
        slow = [False]
        try:
            got = await self._read(scope, receive, send, route, path, slow)
        finally:
            self.reading -= 1
            if not slow[0]:
                self.fast_reading -= 1
        if got is None:
            return self._maybe_idle()
        body, photos = got
        if self.inflight >= self.max_inflight:   # filled up while this body arrived (slowly)
            return await self._shed_one(send, path)
        self.inflight += 1
        self._observe("inflight", self.inflight)
        held = [True]

        def release() -> None:
            """The slot is free once the answer is sent (BentoML's access log and metrics still run
            after it), or when the handler ends without one."""
            if held[0]:
                held[0] = False
                self.inflight -= 1
                self._observe("inflight", self.inflight)
        scope = normalised(scope, route)
        if photos is not None:
            scope[PHOTOS] = photos
        try:
            await self._forward(scope, receive, send, body, release)
        finally:
            release()
            self._maybe_idle()

    async def _read(self, scope, receive, send, route: Route, path: str, slow: list[bool]
                    ) -> tuple[bytes, list[bytes] | None] | None:
        """(The checked body, its files' bytes for a multipart route), or None when the request was
        refused or the client left.

        A body arriving at full speed counts against max_inflight (so overload is shed before any
        body is read); one still arriving after SLOW_AFTER_S stops counting (`slow[0]` is set): a
        slow sender then costs a `reading` count and its bytes, bounded by `read_timeout_s`,
        `max_reading` and `max_buffered_mb` (all bodies being read, per worker), never a model slot."""
        body, size = bytearray(), 0
        loop = asyncio.get_running_loop()
        try:
            boundary = check_headers(scope["headers"], route)
            parts = PartsCheck(boundary, route) if route.field is not None else None
            keep = parts is None or not self.photos_only
            start = loop.time()
            deadline = start + self.read_timeout
            while True:
                limit = deadline if slow[0] else min(deadline, start + SLOW_AFTER_S)
                try:        # a body trickled in slowly would hold its buffer (slowloris)
                    msg = await asyncio.wait_for(asyncio.shield(pending := asyncio.ensure_future(receive())),
                                                 limit - loop.time())
                except TimeoutError:
                    if loop.time() >= deadline:
                        pending.cancel()
                        raise Refused(408, f"request body not received within {self.read_timeout:g} s") from None
                    slow[0] = True                       # past SLOW_AFTER_S: off the admission count
                    self.fast_reading -= 1
                    msg = await self._rest(pending, deadline - loop.time())
                if msg["type"] == "http.disconnect":
                    await self._client_gone(send)
                    return None
                chunk = msg.get("body", b"")
                if size + len(chunk) > route.max_bytes:
                    raise Refused(413, f"request body over the limit of {route.max_bytes} bytes")
                if self.buffered + len(chunk) > self.max_buffered:
                    raise Refused(503, "server busy receiving other uploads, retry later")
                self.buffered += len(chunk)
                size += len(chunk)
                if keep:
                    body += chunk
                if parts is not None:
                    parts.feed(chunk)        # parts counted and checked as they stream in
                if not msg.get("more_body", False):
                    break
            if parts is not None:
                parts.finish()
            return bytes(body), parts.files if parts is not None else None
        except Refused as r:
            log.warning("POST %s %d %s", path, r.status, r.reason)
            self._observe("shed" if r.status == 503 else "refused")
            # the connection is closed after an early answer: the rest of the body is never read
            extra = [(b"retry-after", self.retry_after)] if r.status == 503 else []
            await reply(send, r.status, r.reason, [*extra, (b"connection", b"close")])
            return None
        finally:
            self.buffered -= size

    async def _rest(self, pending: asyncio.Future, timeout: float) -> dict:
        """The receive() already waited on, within what is left of the read deadline."""
        try:
            return await asyncio.wait_for(pending, max(timeout, 0.0))
        except TimeoutError:
            raise Refused(408, f"request body not received within {self.read_timeout:g} s") from None

    async def _forward(self, scope, receive, send, body: bytes, answered=lambda: None) -> None:
        """Runs the handler on the buffered body; cancels it when the client disconnects first.
        `answered()` is called once the answer's last byte is sent."""
        gone = asyncio.Event()
        delivered, started = False, False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def tracked_send(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)
            if msg["type"] == "http.response.body" and not msg.get("more_body", False):
                answered()

        handler = asyncio.ensure_future(self.app(scope, replay, self._own_503(tracked_send)))
        watcher = asyncio.ensure_future(receive())
        await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not handler.done() and watcher.result().get("type") == "http.disconnect":
            gone.set()
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
            if not started:
                await self._client_gone(send)
            return
        watcher.cancel()
        await handler

    def _own_503(self, send):
        """A 503 from inside (BentoML's batch dispatcher, a busy decoder) becomes the guard's own:
        the same JSON shape, with Retry-After, counted as shed."""
        held = False

        async def wrapped(msg):
            nonlocal held
            if msg["type"] == "http.response.start" and msg["status"] == 503:
                held = True
                return None
            if not held:
                return await send(msg)
            if not msg.get("more_body", False):
                self._observe("shed")
                await reply(send, 503, "server busy, retry later", [(b"retry-after", self.retry_after)])
            return None
        return wrapped

    async def _client_gone(self, send) -> None:
        """The client left before its answer: counted, and "answered" 499 (nginx's code for it).
        Nobody receives it (uvicorn drops sends after a disconnect), but BentoML's timeout
        middleware waits for a first send and would otherwise hold the request's task for the
        whole traffic timeout - delaying a graceful shutdown by that much."""
        self._observe("client_gone")
        await reply(send, 499, "client closed the request")

    async def _shed_one(self, send, path: str) -> None:
        """503 + Retry-After; logged as one line per second at most (a flood must not flood the log)."""
        self._shed += 1
        self._observe("shed")
        now = time.monotonic()
        if now - self._shed_logged >= 1.0:
            log.warning("POST %s 503 over %d requests in flight (%d bodies arriving): shed %d since the last line",
                        path, self.max_inflight, self.reading, self._shed)
            self._shed, self._shed_logged = 0, now
        await reply(send, 503, "server busy, retry later", [(b"retry-after", self.retry_after), (b"connection", b"close")])

    def _maybe_idle(self) -> None:
        """Nothing being read or processed: let the worker give memory back (at most every 5 s; a
        check is scheduled for then, so the last request of a burst is followed by one too)."""
        if self.idle is None or self.inflight or self.reading:
            return
        wait = self._idle_at + 5.0 - time.monotonic()
        if wait <= 0:
            self._idle_at = time.monotonic()
            self.idle()
        elif not self._idle_pending:
            self._idle_pending = True
            asyncio.get_running_loop().call_later(wait, self._idle_later)

    def _idle_later(self) -> None:
        self._idle_pending = False
        self._maybe_idle()

    def _observe(self, what: str, value: int = 1) -> None:
        if self.metrics is not None:
            self.metrics(what, value)


CURRENT: UploadGuard | None = None


class EarlyShed:
    """Sheds a model-route request the guard would shed, before BentoML's middlewares run (metrics,
    tracing, access log: most of a shed request's cost on the event loop). Installed as the
    outermost layer by service/frontdoor.py; the guard itself stays inside BentoML's stack, where
    cancelling a request on a hang-up reaches the handler (BentoML's timeout middleware runs the
    app in a task of its own, which a cancel from outside it would leave running)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        guard = CURRENT
        if (guard is not None and scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] in guard.routes and guard.overloaded()):
            return await guard._shed_one(send, scope["path"])
        return await self.app(scope, receive, send)


async def reply(send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
