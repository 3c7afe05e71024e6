"""The model routes' request checks, pure functions of a request's headers and body (no I/O): the
one accepted Content-Type and its parameters, Content-Length, and the multipart structure, checked
as the body streams in (`PartsCheck`) with python-multipart, the parser BentoML's Starlette uses, so
both read the same parts. service/guard.py applies them; each failure is a `Refused(status, reason)`.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header

# python-multipart logs a WARNING of its own for every malformed body (the guard's and Starlette's
# parse): the guard's one line per refusal says it, so a flood of them is not logged three times
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)
PHOTO_TYPES = (b"image/", b"application/octet-stream")   # what browsers and curl send for a photo
BOUNDARY = re.compile(rb"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")             # RFC 2046 bchars
MAX_PART_HEADERS, MAX_PART_HEADER_BYTES = 8, 4096
PHOTOS = "faces.photos"     # the scope key under which the guard hands on the checked photos' bytes


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
    media, *params = ctypes[0].split(b";")
    if media.strip() != route.media:
        raise Refused(415, f"Content-Type must be {expected}" + (" (file parts)" if route.field else ""))
    # Starlette decodes part names with a multipart `charset` parameter (an unknown one was a 500) and
    # BentoML reads JSON whatever its charset says. So: one boundary (multipart), and at most one
    # charset, utf-8 (what Spring's and other clients add); anything else is refused, and what passes
    # is forwarded as a Content-Type of the media type and boundary alone (`normalised`)
    names = [q.split(b"=", 1)[0].strip().lower() for q in params]
    charsets = [q.split(b"=", 1)[-1].strip().strip(b'"').lower() for q in params if q.split(b"=", 1)[0].strip().lower() == b"charset"]
    wanted = {b"boundary", b"charset"} if route.field else {b"charset"}
    if (any(n not in wanted for n in names) or len(names) != len(set(names)) or charsets not in ([], [b"utf-8"])
            or (route.field is not None and b"boundary" not in names)):
        raise Refused(400, f"Content-Type {expected} takes " + ("one boundary parameter (and charset=utf-8 at most)"
                                                                 if route.field else "no parameter but charset=utf-8"))
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


def normalised(scope: dict, route: Route) -> dict:
    """The scope with its (checked) Content-Type reduced to the media type and boundary: the
    parameters that were allowed but mean nothing (charset=utf-8) provably never reach BentoML."""
    ctype = next(v for k, v in scope["headers"] if k == b"content-type")
    if route.field is not None:
        ctype = route.media + b"; boundary=" + parse_options_header(ctype)[1][b"boundary"]
    else:
        ctype = route.media
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"] + [(b"content-type", ctype)]
    return {**scope, "headers": headers}


class PartsCheck:
    """python-multipart, fed the body as it arrives: each part is checked when its headers end (one
    form-data file in the route's field, an image type), counted when it begins (the file after the
    last allowed one is refused before its bytes arrive), sized as its data streams and refused when
    empty. So a body of a million empty parts costs one part over the limit, not a million callbacks.
    The checked files' bytes are kept, in order, in `files` (service/direct.py answers from them
    instead of parsing the body again). Raises Refused."""

    def __init__(self, boundary: bytes, route: Route):
        self.route, self.field = route, (route.field or b"").decode()
        self.parts, self.ended = 0, False
        self.files: list[bytes] = []
        self._data: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._field, self._value, self._size, self._header_bytes = b"", b"", 0, 0
        callbacks = {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
            "on_part_data", "on_part_end", "on_end")}
        self.parser = MultipartParser(boundary, callbacks, max_header_count=MAX_PART_HEADERS,  # type: ignore[arg-type]
                                      max_header_size=MAX_PART_HEADER_BYTES)

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except Refused:
            raise
        except Exception:  # noqa: BLE001 - python-multipart raises several types; all mean "malformed"
            raise Refused(400, "malformed multipart body") from None

    def finish(self) -> int:
        """-> the number of photos. Raises Refused."""
        self.feed(b"")
        if not self.ended:
            raise Refused(400, "multipart body ends before its closing boundary")
        if not self.parts:
            raise Refused(400, f"no photo: send it as a file in the field '{self.field}'")
        return self.parts

    def on_part_begin(self):
        self.parts += 1
        if self.parts > self.route.max_files:
            raise Refused(400, f"more than {self.route.max_files} files in one request")
        self._headers, self._size, self._header_bytes, self._data = [], 0, 0, []

    def on_header_field(self, data, start, end):
        self._field += data[start:end]

    def on_header_value(self, data, start, end):
        self._value += data[start:end]

    def on_header_end(self):
        self._header_bytes += len(self._field) + len(self._value)
        self._headers.append((self._field.lower(), self._value))
        self._field, self._value = b"", b""
        if len(self._headers) > MAX_PART_HEADERS or self._header_bytes > MAX_PART_HEADER_BYTES:
            raise Refused(400, "multipart part headers too many or too large")

    def on_headers_finished(self):
        _check_part(self._headers, self.route, self.field)

    def on_part_data(self, data, start, end):
        self._size += end - start
        if self._size > self.route.max_file_bytes:
            raise Refused(413, f"a photo is over the limit of {self.route.max_file_bytes} bytes")
        self._data.append(data[start:end])

    def on_part_end(self):
        if self._size == 0:
            raise Refused(400, f"file {self.parts} is empty")
        self.files.append(b"".join(self._data))
        self._data = []

    def on_end(self):
        self.ended = True


def check_parts(body: bytes, boundary: bytes, route: Route) -> int:
    """A whole multipart body -> the number of photos in it (tests; the guard streams). Raises Refused."""
    check = PartsCheck(boundary, route)
    check.feed(body)
    return check.finish()


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
