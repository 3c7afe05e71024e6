"""The outermost ASGI layer (service/frontdoor.py puts it around the application, outside BentoML's
middlewares, so that they see its rewritten path):
- every path that no route serves gets the one label "/unknown" (BentoML's Prometheus middleware
  labels series with the path as sent: a path per request was a new series, kept until restart);
- a redirect's Location becomes a relative path (Starlette builds it from the Host header);
- every answer gets X-Content-Type-Options: nosniff, and HTML ones a CSP (unless the page has its
  own), X-Frame-Options and Referrer-Policy.
And `json_routing_errors`, which service/guard.py applies to every route but the model routes:
Starlette's plain-text 404 / 405 as JSON.
"""
from __future__ import annotations

import json
from collections.abc import Iterable

import httptools

UNKNOWN = "/unknown"
HTML_HEADERS = [(b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]


class Outer:
    """The outermost ASGI layer: unknown paths share a label, relative redirects, security headers."""

    def __init__(self, app, csp: str = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                                       "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"):
        self.app, self.csp = app, csp
        self._known: tuple[frozenset[str], tuple[str, ...]] | None = None

    def known(self) -> tuple[frozenset[str], tuple[str, ...]]:
        if self._known is None:
            self._known = route_paths(self.app)
        return self._known

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        exact, prefixes = self.known()
        if exact and scope["path"] not in exact and not scope["path"].startswith(prefixes):
            scope = {**scope, "path": UNKNOWN, "raw_path": UNKNOWN.encode()}
        return await self.app(scope, receive, self._headers(send))

    def _headers(self, send):
        async def wrapped(msg):
            if msg["type"] == "http.response.start":
                headers = [(k, v) for k, v in msg.get("headers", []) if k.lower() != b"location"]
                location = next((v for k, v in msg.get("headers", []) if k.lower() == b"location"), None)
                if location is not None:
                    headers.append((b"location", relative(location)))
                headers.append((b"x-content-type-options", b"nosniff"))
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ctype.startswith(b"text/html"):
                    if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                        headers.append((b"content-security-policy", self.csp.encode()))    # the page's own wins
                    headers += HTML_HEADERS
                msg = {**msg, "headers": headers}
            await send(msg)
        return wrapped


def relative(location: bytes) -> bytes:
    """http://evil.example/docs?x -> /docs?x: a redirect never names a host the client sent."""
    url = httptools.parse_url(location) if b"://" in location else None
    if url is None:
        return location if location.startswith(b"/") and not location.startswith(b"//") else b"/"
    return (url.path or b"/") + (b"?" + url.query if url.query else b"")


def route_paths(app) -> tuple[frozenset[str], tuple[str, ...]]:
    """The paths an ASGI app serves: exact route paths and mount prefixes, found by walking the
    middleware chain (`.app`) to the Starlette router. Empty when no router is found (then `Outer`
    leaves paths as they are)."""
    exact: set[str] = set()
    prefixes: list[str] = []
    seen = 0
    node = app
    while node is not None and seen < 32 and not isinstance(getattr(node, "routes", None), list):
        node = getattr(node, "app", None) or getattr(node, "router", None)
        seen += 1
    if node is not None:
        _collect(node.routes, "", exact, prefixes)
    return frozenset(exact), tuple(prefixes)


def _collect(routes: Iterable, prefix: str, exact: set[str], prefixes: list[str]) -> None:
    for r in routes:
        path = getattr(r, "path", None)
        if path is None:
            continue
        sub = getattr(r, "routes", None)
        files = _static_files(getattr(r, "app", None))
        if files is not None:                                    # StaticFiles: each file is a path
            exact.update(f"{prefix}{path}/{f}" for f in files)
        elif sub is not None and hasattr(r, "app"):              # Mount
            if sub:
                _collect(sub, prefix + path, exact, prefixes)
            else:
                prefixes.append(prefix + path + "/")
        else:
            exact.add(prefix + path)


def _static_files(app, limit: int = 1000) -> list[str] | None:
    """The files a Starlette StaticFiles app serves (relative paths), or None for any other app.
    Listed once: a prefix would let every made-up file name under it become a metrics label."""
    dirs = getattr(app, "all_directories", None)
    if dirs is None:
        return None
    import os

    out: list[str] = []
    for d in dirs:
        for root, _, names in os.walk(d):
            out += [os.path.relpath(os.path.join(root, n), d).replace(os.sep, "/") for n in names]
            if len(out) > limit:
                return out[:limit]
    return out


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
