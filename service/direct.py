"""The photo routes answered right after the guard, without BentoML's request handling (issue 26).

For a multipart route BentoML's handler builds a Starlette Request, parses the body a second time
(python-multipart, into spooled temporary files), validates it into the API's pydantic input, calls
the method through its context machinery and streams the answer through its IO descriptor. At
concurrency 32 on two cores that was ~0.5 ms of CPU per /predict, an eighth of all a request cost
(bench/serve.py; docs/speed.md). The guard (service/guard.py) has already read the body and parsed
and checked every part, and it hands their bytes on in the scope (`PHOTOS`). `Direct`, the innermost
middleware, gives them to the handler the service instance registered for the path (`answer`) and
answers as BentoML's handler would (`error_answer`): the same status codes, JSON bodies, `Server`
and request-id headers and log records, which tests/service/test_direct.py asserts against
BentoML's own answers to the same requests. BentoML's outer middlewares (metrics, tracing, access
log, timeout) still see every request. The `@bentoml.api` methods stay: they are the OpenAPI
schema, the Python client's and in-process callers' API, and the route when no handler is registered.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence

from pydantic import BaseModel, ValidationError

from service.requests import PHOTOS

Handler = Callable[[list[bytes]], Awaitable[BaseModel | Sequence[BaseModel]]]
HANDLERS: dict[str, Handler] = {}     # path -> the running service instance's handler (one per worker)
UNEXPECTED = "An unexpected error has occurred, please check the server log."
# BentoML's handler logs every error here (service/logs.py turns a 4xx into one WARNING line)
log = logging.getLogger("bentoml._internal.server.http_app")


def answer(path: str, handler: Handler) -> None:
    """`await handler(photos)` answers POST `path` once the guard has checked its photos."""
    HANDLERS[path] = handler


def error_answer(exc: Exception) -> tuple[int, object]:
    """An exception raised by a handler -> (status, JSON body) as BentoML's `api_endpoint_wrapper`
    makes them: a validation error is a 400 with the pydantic errors, a BentoMLException its own
    status with a one-element list (the shape BentoML sends; service/openapi.py documents it), a
    5xx or anything else the generic 500 message (no detail reaches the client)."""
    from bentoml.exceptions import BentoMLException

    if isinstance(exc, ValidationError):
        return 400, {"error": f"{exc.error_count()} validation error for {exc.title}",
                     "detail": exc.errors(include_context=False, include_input=False)}
    if isinstance(exc, BentoMLException):
        status = exc.error_code.value
        if status in (401, 403):
            return status, {"error": "Authorization error"}
        return status, ({"error": UNEXPECTED} if status >= 500 else [{"error": str(exc)}])
    return 500, {"error": UNEXPECTED}


def to_json(out: BaseModel | Sequence[BaseModel]) -> bytes:
    if isinstance(out, BaseModel):
        return out.model_dump_json().encode()
    return b"[" + b",".join(m.model_dump_json().encode() for m in out) + b"]"


class Direct:
    """ASGI middleware, innermost: a POST whose photos the guard checked, to a path with a handler,
    is answered here; anything else goes on to BentoML."""

    def __init__(self, app, server: str = "BentoML Service/Faces"):
        self.app, self.server, self.trace_headers = app, server.encode(), TraceHeaders()

    async def __call__(self, scope, receive, send):
        photos = scope.get(PHOTOS) if scope["type"] == "http" else None
        handler = HANDLERS.get(scope["path"]) if photos is not None else None
        if handler is None:
            return await self.app(scope, receive, send)
        try:
            status, body = 200, to_json(await handler(photos))
        except Exception as exc:  # noqa: BLE001 - every failure is answered, as BentoML's handler does
            log.error("Exception on %s [%s]", scope["path"], scope["method"], exc_info=True)
            status, payload = error_answer(exc)
            body = _dumps(payload)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"server", self.server), *self.trace_headers()]})
        await send({"type": "http.response.body", "body": body})


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class TraceHeaders:
    """X-BentoML-Request-ID (a traced route: FACES_TRACE=1, service/service.py) and X-BentoML-Trace-ID
    (when BentoML's `http.response.trace_id` is on), as BentoML's handler adds them."""

    def __init__(self):
        from bentoml._internal.configuration.containers import BentoMLContainer

        self.fmt = BentoMLContainer.logging_formatting.get()
        self.trace_id = BentoMLContainer.http.response.trace_id.get()

    def __call__(self) -> list[tuple[bytes, bytes]]:
        from bentoml._internal.context import trace_context

        out = []
        if trace_context.request_id is not None:
            out.append((b"x-bentoml-request-id", format(trace_context.request_id, self.fmt["span_id"]).encode()))
        if self.trace_id:
            out.append((b"x-bentoml-trace-id", format(trace_context.trace_id, self.fmt["trace_id"]).encode()))
        return out
