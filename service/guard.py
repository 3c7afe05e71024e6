"""The service's front door for the model routes: admission, strict request checks, client hang-ups.

An ASGI middleware in front of BentoML's handlers for POST /predict, /predict_batch and /infer:
1. Admission: at most `max_inflight` requests per worker are admitted (being read, decoded, queued
   or in the model); the next one is answered 503 + Retry-After at once, before its body is read.
2. Headers: exactly one Content-Type with exactly the route's media type (BentoML matches the media
   type byte for byte and parses anything else as JSON, so a looser check here is a bypass); at
   most one Content-Length, and a body over the route's limit is a 413 before a byte is read.
3. Body: read into one growing buffer (linear), stopped at the limit (413) or when it is not all
   there within `read_timeout_s` (408: a slow sender must not hold an admission slot).
4. Multipart: parsed with python-multipart (the parser BentoML's Starlette uses, so both read the
   same parts): every part must be a *file* (`filename=`) in the route's one field, with an image
   or octet-stream type, within the per-file size and the per-request file count.
5. Hang-ups: a client that disconnects while its request waits is detected and its handler is
   cancelled, so its photos never reach the model (service/batcher.py skips cancelled ones).
Anything refused gets a JSON 4xx `{"error": ...}` and one WARNING log line (route, status, reason);
service/logs.py does the same for BentoML's own 4xx. On every other route, Starlette's plain-text
404 / 405 become JSON too (`json_routing_errors`).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header

log = logging.getLogger("faces.guard")
PHOTO_TYPES = (b"image/", b"application/octet-stream")   # what browsers and curl send for a photo
BOUNDARY = re.compile(rb"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")             # RFC 2046 bchars
MAX_PART_HEADERS, MAX_PART_HEADER_BYTES = 8, 4096


@dataclass(frozen=True)
class Route:
    media: bytes                # the one media type accepted
    field: bytes | None         # multipart field holding the photos (None: a JSON route)
    max_files: int              # photos per request (multipart routes)
    max_bytes: int              # request body limit
    max_file_bytes: int = 0     # one photo's limit (multipart routes)


class Refused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def check_headers(headers: list[tuple[bytes, bytes]], route: Route) -> bytes:
    """Content-Type and Content-Length of a request -> the multipart boundary (b"" for JSON).
    Raises Refused."""
    ctypes = [v for k, v in headers if k == b"content-type"]
    lengths = [v for k, v in headers if k == b"content-length"]
    expected = route.media.decode()
    if len(ctypes) != 1:
        raise Refused(415, f"send exactly one Content-Type header: {expected}")
    if ctypes[0].split(b";")[0].strip() != route.media:
        raise Refused(415, f"Content-Type must be {expected}" + (" (file parts)" if route.field else ""))
    if len(lengths) > 1 or (lengths and not lengths[0].strip().isdigit()):
        raise Refused(400, "send at most one numeric Content-Length header")
    if lengths and int(lengths[0]) > route.max_bytes:
        raise Refused(413, f"request body of {int(lengths[0])} bytes is over the limit of {route.max_bytes}")
    if route.field is None:
        return b""
    boundary = parse_options_header(ctypes[0])[1].get(b"boundary", b"")
    if not BOUNDARY.match(boundary):
        raise Refused(400, "multipart Content-Type needs a valid boundary parameter")
    return boundary


class _Parts:
    """python-multipart callbacks -> per part: its headers and its size (the data is not copied)."""

    def __init__(self, max_file_bytes: int):
        self.parts: list[dict] = []
        self.max_file_bytes, self.ended = max_file_bytes, False
        self._field, self._value = b"", b""

    def on_part_begin(self):
        self.parts.append({"headers": [], "header_bytes": 0, "size": 0})

    def on_header_field(self, data, start, end):
        self._field += data[start:end]

    def on_header_value(self, data, start, end):
        self._value += data[start:end]

    def on_header_end(self):
        part = self.parts[-1]
        part["header_bytes"] += len(self._field) + len(self._value)
        part["headers"].append((self._field.lower(), self._value))
        self._field, self._value = b"", b""
        if len(part["headers"]) > MAX_PART_HEADERS or part["header_bytes"] > MAX_PART_HEADER_BYTES:
            raise Refused(400, "multipart part headers too many or too large")

    def on_part_data(self, data, start, end):
        self.parts[-1]["size"] += end - start
        if self.parts[-1]["size"] > self.max_file_bytes:
            raise Refused(413, f"a photo is over the limit of {self.max_file_bytes} bytes")

    def on_end(self):
        self.ended = True


def check_parts(body: bytes, boundary: bytes, route: Route) -> int:
    """A multipart body -> the number of photos in it. Raises Refused."""
    p = _Parts(route.max_file_bytes)
    callbacks = {name: getattr(p, name) for name in ("on_part_begin", "on_header_field", "on_header_value",
                                                     "on_header_end", "on_part_data", "on_end")}
    try:
        parser = MultipartParser(boundary, callbacks, max_header_count=MAX_PART_HEADERS,  # type: ignore[arg-type]
                                 max_header_size=MAX_PART_HEADER_BYTES)
        parser.write(body)
        parser.finalize()
    except Refused:
        raise
    except Exception:  # noqa: BLE001 - python-multipart raises several types; all mean "malformed"
        raise Refused(400, "malformed multipart body") from None
    if not p.ended:
        raise Refused(400, "multipart body ends before its closing boundary")
    field = (route.field or b"").decode()        # multipart routes name their field
    if not p.parts:
        raise Refused(400, f"no photo: send it as a file in the field '{field}'")
    for part in p.parts:
        _check_part(part["headers"], route, field)
    if len(p.parts) > route.max_files:
        raise Refused(400, f"{len(p.parts)} files; at most {route.max_files} per request")
    return len(p.parts)


def _check_part(headers: list[tuple[bytes, bytes]], route: Route, field: str) -> None:
    dispositions = [v for k, v in headers if k == b"content-disposition"]
    types = [v for k, v in headers if k == b"content-type"]
    if len(dispositions) != 1 or len(types) > 1:
        raise Refused(400, "each part needs one Content-Disposition and at most one Content-Type")
    kind, options = parse_options_header(dispositions[0])
    if kind != b"form-data" or options.get(b"name") != route.field:
        name = options.get(b"name", b"").decode("latin-1")[:40]
        raise Refused(400, f"unknown field '{name}'; send photos in the field '{field}'")
    if b"filename" not in options:
        raise Refused(400, f"field '{field}' must be a file upload (filename=...), not a text value")
    if types and not types[0].strip().lower().startswith(PHOTO_TYPES):
        raise Refused(415, f"Invalid content type {types[0][:60].decode('latin-1')}, expected image/*")


class UploadGuard:
    """ASGI middleware; `routes` maps a path to its Route; `metrics` gets admission counts."""

    def __init__(self, app, routes: dict[str, Route], max_inflight: int, retry_after_s: int,
                 read_timeout_s: float = 15.0, metrics=None):
        self.app, self.routes, self.max_inflight = app, routes, max_inflight
        self.read_timeout = read_timeout_s
        self.retry_after = str(retry_after_s).encode()
        self.metrics = metrics
        self.inflight = 0
        self._shed, self._shed_logged = 0, 0.0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = self.routes.get(scope["path"])
        if route is None or scope["method"] != "POST":
            return await self.app(scope, receive, json_routing_errors(send))
        path = scope["path"]
        if self.inflight >= self.max_inflight:
            return await self._shed_one(send, path)
        self.inflight += 1
        self._observe("inflight", self.inflight)
        try:
            body = await self._read(scope, receive, send, route, path)
            if body is not None:
                await self._forward(scope, receive, send, body)
        finally:
            self.inflight -= 1
            self._observe("inflight", self.inflight)

    async def _read(self, scope, receive, send, route: Route, path: str) -> bytes | None:
        """The checked body, or None when the request was refused or the client left."""
        try:
            boundary = check_headers(scope["headers"], route)
            body = bytearray()
            deadline = asyncio.get_running_loop().time() + self.read_timeout
            while True:
                try:        # a body trickled in slowly would hold an admission slot (slowloris)
                    msg = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
                except TimeoutError:
                    raise Refused(408, f"request body not received within {self.read_timeout:g} s") from None
                if msg["type"] == "http.disconnect":
                    await self._client_gone(send)
                    return None
                body += msg.get("body", b"")
                if len(body) > route.max_bytes:
                    raise Refused(413, f"request body over the limit of {route.max_bytes} bytes")
                if not msg.get("more_body", False):
                    break
            if route.field is not None:
                check_parts(bytes(body), boundary, route)
            return bytes(body)
        except Refused as r:
            log.warning("POST %s %d %s", path, r.status, r.reason)
            self._observe("refused")
            await reply(send, r.status, r.reason)
            return None

    async def _forward(self, scope, receive, send, body: bytes) -> None:
        """Runs the handler on the buffered body; cancels it when the client disconnects first."""
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

        handler = asyncio.ensure_future(self.app(scope, replay, tracked_send))
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
            log.warning("POST %s 503 over %d requests in flight: shed %d since the last line",
                        path, self.max_inflight, self._shed)
            self._shed, self._shed_logged = 0, now
        await reply(send, 503, "server busy, retry later", [(b"retry-after", self.retry_after)])

    def _observe(self, what: str, value: int = 1) -> None:
        if self.metrics is not None:
            self.metrics(what, value)


def json_routing_errors(send):
    """Starlette's routing answers an unknown path or method with a plain-text 404 / 405; API
    clients get every error as JSON, so those two become `{"error": ...}` (other headers, such as
    `Allow`, are kept). Nothing else is touched."""
    held: dict | None = None

    async def wrapped(msg):
        nonlocal held
        if msg["type"] == "http.response.start" and msg["status"] in (404, 405) and dict(
                msg.get("headers", [])).get(b"content-type", b"").startswith(b"text/plain"):
            held = msg                                    # answered below, with the body
            return None
        if held is None:
            return await send(msg)
        if msg.get("more_body", False):
            return None                                   # the plain-text body is dropped
        body = json.dumps({"error": "Not Found" if held["status"] == 404 else "Method Not Allowed"}).encode()
        headers = [(k, v) for k, v in held.get("headers", []) if k not in (b"content-type", b"content-length")]
        await send({**held, "headers": [*headers, (b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
        return await send({"type": "http.response.body", "body": body})
    return wrapped


async def reply(send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
