"""The connection layer, in front of BentoML: what uvicorn (httptools) as BentoML starts it leaves open.

uvicorn 0.54's httptools protocol has no header-read timeout, buffers request headers without a size
limit, never closes a connection that sent part of a request, and accepts any number of connections.
BentoML passes no option for these, and its own middlewares (metrics, access log) see the request
path before any middleware of the service. So this module replaces uvicorn's "auto" HTTP protocol
with a subclass (`install`, called when service.service is imported, which BentoML does in each
worker before it builds uvicorn's Config) that adds, per connection:
- headers: the request line and headers must arrive within `header_timeout_s` and fit in
  `max_header_bytes` (else a JSON 408 / 431 and the connection is closed);
- body: a request's body must be complete within `body_timeout_s` of its headers (the guard answers
  slow photo uploads with 408 sooner; this covers every other route);
- connections: past `max_connections` per worker a new connection gets a 503 + Retry-After and is
  closed, before anything is parsed;
and wraps the application in `Outer` (service/outer.py: one label for unknown paths, relative
redirects, security headers), the outermost ASGI layer, around the service's early shedding
(service/guard.py `EarlyShed`), which so runs before BentoML's middlewares.
Why here and not in HAProxy (deploy/haproxy): `make serve`, the container, Kubernetes and the tests
all run this same process; a proxy would be one more thing each of them must start.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.outer import Outer

SWEEP_S = 0.25          # deadlines are checked this often (so met within this much)


@dataclass(frozen=True)
class Bounds:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    body_timeout_s: float = 60.0
    keep_alive_s: float = 5.0
    max_connections: int = 512
    retry_after_s: int = 1


BOUNDS = Bounds()


WRAP = None   # the service's own outermost layer (its early shedding), applied inside `Outer`


def install(bounds: Bounds, wrap=None) -> None:
    """Makes uvicorn's default ("auto") HTTP protocol `FrontDoor` with these bounds; `wrap(app)` (the
    service's early shedding) then runs before any of BentoML's middlewares (metrics, tracing, access
    log), so a shed request costs the event loop almost nothing."""
    import uvicorn.config

    global BOUNDS, WRAP
    BOUNDS, WRAP = bounds, wrap
    _OUTER.clear()
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:FrontDoor"


def raw_answer(status: int, phrase: str, message: str, extra: Iterable[str] = ()) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = [f"HTTP/1.1 {status} {phrase}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class HeadTooLarge(Exception):
    """Raised inside httptools' callbacks: the parse stops (it re-raises as HttpParserCallbackError)."""


class FrontDoor(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body deadlines, a header size limit and a connection cap."""

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.app = outer(self.app)
        self.timeout_keep_alive = BOUNDS.keep_alive_s
        self._deadline: tuple[float, int, str, str] | None = None    # (when, status, phrase, message)
        self._head_bytes = self._head_parsed = 0     # received while the head is incomplete / parsed
        self._in_head = True

    def connection_made(self, transport) -> None:
        self.lingering = Lingering(transport, self._request_incomplete)
        super().connection_made(cast(asyncio.Transport, self.lingering))   # uvicorn closes through it
        if len(self.connections) > BOUNDS.max_connections:      # a flood of connections: no parsing,
            self._in_head = False                                 # no timers, one short answer
            transport.write(raw_answer(503, "Service Unavailable", "too many connections, retry later",
                                       [f"retry-after: {BOUNDS.retry_after_s}"]))
            self.lingering._needed = lambda: True     # its request is still to come: linger, no reset
            self.lingering.close()
            _LIVE.add(self)                           # the sweep ends the linger
            return
        self._await_head()

    def _request_incomplete(self) -> bool:
        """Part of the current request is still to come (an early answer): closing now would reset."""
        return (self.cycle is not None and self.cycle.more_body) or (self._in_head and self._head_bytes > 0)

    def _await_head(self) -> None:
        self._in_head, self._head_bytes, self._head_parsed = True, 0, 0
        self._arm(BOUNDS.header_timeout_s, 408, "Request Timeout",
                  f"request headers not received within {BOUNDS.header_timeout_s:g} s")

    def _arm(self, seconds: float, status: int, phrase: str, message: str) -> None:
        """A deadline, checked by the worker's one sweep (`_sweep`): no timer per connection and
        request (thousands of cancelled timers a second made asyncio's heap the cost of shedding)."""
        global _SWEEPING
        self._deadline = (time.monotonic() + seconds, status, phrase, message)
        _LIVE.add(self)
        if not _SWEEPING:
            _SWEEPING = True
            self.loop.call_later(SWEEP_S, _sweep, self.loop)

    def _disarm(self) -> None:
        self._deadline = None

    def _due(self, now: float) -> None:
        if self.lingering.lingering and now > self.lingering.until:
            self.lingering.really_close()
        elif self._deadline is not None and now > self._deadline[0]:
            self._expire(*self._deadline[1:])

    def _expire(self, status: int, phrase: str, message: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        idle_keep_alive = self.cycle is not None and self._in_head and self._head_bytes == 0
        if not idle_keep_alive and (self.cycle is None or self.cycle.response_complete or not self.cycle.response_started):
            self.transport.write(raw_answer(status, phrase, message))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        self._disarm()
        _LIVE.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's own, plus the header limit: bytes received while the head is incomplete (one
        huge header is buffered inside httptools before any callback) and the parsed request line
        and header sizes (10k small headers can arrive, complete, in one read)."""
        if self.lingering.lingering:
            return self.lingering.discard(len(data))
        if self._in_head:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._head_parsed <= BOUNDS.max_header_bytes:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
                return
        over = self._head_parsed > BOUNDS.max_header_bytes or (self._in_head and self._head_bytes > BOUNDS.max_header_bytes)
        if over and not self.transport.is_closing():
            self._disarm()
            self.transport.write(raw_answer(431, "Request Header Fields Too Large",
                                            f"request line and headers over {BOUNDS.max_header_bytes} bytes"))
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head(self, n: int) -> None:
        """Parsed head bytes; past the limit the parse stops here (data_received answers 431)."""
        if not self._in_head:          # a pipelined request's head, parsed in the same read
            self._in_head, self._head_bytes, self._head_parsed = True, 0, 0
        self._head_parsed += n
        if self._head_parsed > BOUNDS.max_header_bytes:
            raise HeadTooLarge

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(BOUNDS.body_timeout_s, 408, "Request Timeout",
                  f"request not received within {BOUNDS.body_timeout_s:g} s")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or not self.cycle.more_body):
            self._await_head()      # keep-alive: the next request's headers have the same deadline


class Lingering:
    """A transport whose close() is a lingering close, as nginx and Apache do, when part of the request
    is still to come: the answer is sent and the write side shut (FIN), then whatever the client still
    sends is read and dropped for up to LINGER_S or LINGER_BYTES before the socket is closed. Closing
    a socket with unread data makes the kernel send a reset, which can destroy an early 413/431
    before the client reads it. A connection whose request was read whole is closed at once."""

    LINGER_S, LINGER_BYTES = 5.0, 32 << 20        # nginx: lingering_timeout 5 s

    def __init__(self, transport, needed=lambda: True):
        self._t, self._needed, self.lingering, self._dropped, self.until = transport, needed, False, 0, 0.0

    def __getattr__(self, name):
        return getattr(self._t, name)

    def close(self) -> None:
        if self.lingering or self._t.is_closing():
            return
        if not self._needed() or not self._t.can_write_eof():
            return self._t.close()          # the whole request was read: nothing left to reset on
        self.lingering, self.until = True, time.monotonic() + self.LINGER_S     # closed by the sweep
        self._t.write_eof()
        if not self._t.is_reading():          # uvicorn pauses reading while a body waits
            self._t.resume_reading()

    def really_close(self) -> None:
        self._t.close()

    def is_closing(self) -> bool:
        return self.lingering or self._t.is_closing()

    def discard(self, n: int) -> None:
        self._dropped += n
        if self._dropped > self.LINGER_BYTES:
            self._t.abort()


_LIVE: set[FrontDoor] = set()          # connections with a deadline or a lingering close
_SWEEPING = False


def _sweep(loop) -> None:
    """Every SWEEP_S: expires the deadlines and lingering closes that are due; runs while any
    connection has one."""
    global _SWEEPING
    now = time.monotonic()
    for proto in list(_LIVE):
        proto._due(now)
        if proto._deadline is None and not proto.lingering.lingering:
            _LIVE.discard(proto)
    _SWEEPING = bool(_LIVE)
    if _SWEEPING:
        loop.call_later(SWEEP_S, _sweep, loop)


_OUTER: dict[int, Outer] = {}


def outer(app) -> Outer:
    """One `Outer` (around `WRAP(app)`) per application (uvicorn builds a protocol per connection)."""
    if id(app) not in _OUTER:
        _OUTER[id(app)] = Outer(WRAP(app) if WRAP is not None else app)
    return _OUTER[id(app)]
