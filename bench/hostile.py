"""Hostile traffic for bench/hardening.py: a generated corpus of malformed requests, and a raw client.

Every request is raw bytes sent over its own loopback TCP connection (so malformed HTTP is possible:
duplicate headers, lying lengths, broken multipart). `corpus(n, seed)` yields (label, raw, expect):
expect "4xx" (must be refused with a JSON 4xx) or "any" (odd but valid photos: 200 or a JSON 4xx).
Nothing here ever gets a 5xx from a healthy service.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import time

from PIL import Image

PATHS = ("/predict", "/predict_batch", "/infer")
FIELD = {"/predict": "image", "/predict_batch": "images"}


def request(path: str, headers: list[tuple[str, str]], body: bytes, length: int | None = -1) -> bytes:
    """Raw HTTP/1.1 request; length -1: the true Content-Length, None: no Content-Length header."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    if length is not None:
        lines.append(f"Content-Length: {len(body) if length == -1 else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def multipart(parts: list[tuple[str, bytes, str]], boundary: str = "fuzzB0undary") -> bytes:
    """parts: (Content-Disposition value, data, part Content-Type or "")."""
    out = b""
    for disp, data, ctype in parts:
        head = f"--{boundary}\r\nContent-Disposition: {disp}\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "")
        out += head.encode("latin-1") + b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def photo_request(path: str, photos: list[bytes], ctype: str = "image/jpeg") -> bytes:
    field = FIELD[path]
    body = multipart([(f'form-data; name="{field}"; filename="p{i}.jpg"', p, ctype) for i, p in enumerate(photos)])
    return request(path, [("Content-Type", "multipart/form-data; boundary=fuzzB0undary")], body)


def _enc(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def odd_images(rng: random.Random) -> list[tuple[str, bytes, str]]:
    """(label, bytes, expect) for image files: broken ones (4xx) and odd valid ones (any)."""
    face = Image.effect_noise((96, 80), 50).convert("RGB")
    jpeg = _enc(face, "JPEG")
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = [("truncated jpeg", jpeg[: len(jpeg) // 3], "4xx"), ("truncated png", _enc(face, "PNG")[:300], "4xx"),
           ("jpeg header + junk", jpeg[:40] + bytes(rng.randrange(256) for _ in range(400)), "4xx"),
           ("animated gif", _enc(frames[0], "GIF", save_all=True, append_images=frames[1:]), "4xx"),
           ("multi-frame tiff", _enc(frames[0], "TIFF", save_all=True, append_images=frames[1:]), "4xx"),
           ("bmp", _enc(face, "BMP"), "4xx"), ("empty", b"", "4xx"), ("text", b"hello, not a photo", "4xx"),
           ("animated webp", _enc(frames[0], "WEBP", save_all=True, append_images=frames[1:]), "any"),
           ("animated png", _enc(frames[0], "PNG", save_all=True, append_images=frames[1:]), "any"),
           ("16-bit png", _enc(Image.new("I;16", (64, 48), 50000), "PNG"), "any"),
           ("palette png", _enc(face.convert("P"), "PNG"), "any"),
           ("cmyk jpeg + icc", _enc(face.convert("CMYK"), "JPEG", icc_profile=b"\0" * 128), "any"),
           ("grey webp", _enc(face.convert("L"), "WEBP"), "any")]
    for orientation in range(10):                       # 0 and 9 are not valid EXIF orientations
        exif = Image.Exif()
        exif[0x0112] = orientation
        out.append((f"exif orientation {orientation}", _enc(face, "JPEG", exif=exif.tobytes()), "any"))
    for w, h in ((100_000, 100_000), (65_000, 1), (1, 65_000), (20_000, 20_000)):   # dimension bombs
        out.append((f"png claims {w}x{h}", _png_header(w, h), "4xx"))
    return out


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb if anyone believed it)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def structural(jpeg: bytes) -> list[tuple[str, bytes, str]]:
    """Requests broken above the image level: media types, headers, multipart structure, JSON."""
    mp = "multipart/form-data; boundary=fuzzB0undary"
    cases = []
    for path in PATHS:
        for ctype in ("Multipart/Form-Data; boundary=fuzzB0undary", "multipart/form-dataX; boundary=fuzzB0undary",
                      "MULTIPART/FORM-DATA", "multipart/mixed; boundary=fuzzB0undary", "text/plain", "image/jpeg",
                      "application/x-www-form-urlencoded", "application/JSON", "", "multipart/form-data; boundary="):
            for body in (b'{"image": "/etc/passwd"}', b'{"images": ["/proc/self/environ"]}',
                         b'{"image": "http://127.0.0.1:9/x.jpg"}', b'{"pixels": ["AAAA"]}', jpeg):
                cases.append((f"{path} ctype {ctype!r}", request(path, [("Content-Type", ctype)], body), "4xx"))
        cases.append((f"{path} two ctypes", request(path, [("Content-Type", mp), ("Content-Type", "application/json")],
                                                    b'{"image": "/etc/passwd"}'), "4xx"))
        cases.append((f"{path} no ctype", request(path, [], b"x"), "4xx"))
        cases.append((f"{path} huge length", request(path, [("Content-Type", mp)], b"x", length=10**12), "4xx"))
        two = request(path, [("Content-Type", mp), ("Content-Length", "1")], b"x")
        cases.append((f"{path} two lengths", two, "4xx"))
    for path in ("/predict", "/predict_batch"):
        f = FIELD[path]
        bad_parts = {
            "unquoted other name": [('form-data; name=photo; filename="a.jpg"', jpeg, "image/jpeg")],
            "filename first, other name": [('form-data; filename="a.jpg"; name="photo"', jpeg, "image/jpeg")],
            "text value path": [(f'form-data; name="{f}"', b"/etc/passwd", "")],
            "text value url": [(f'form-data; name="{f}"', b"http://127.0.0.1:9/a.jpg", "")],
            "attachment": [(f'attachment; name="{f}"; filename="a.jpg"', jpeg, "image/jpeg")],
            "extra field": [(f'form-data; name="{f}"; filename="a.jpg"', jpeg, "image/jpeg"),
                            ('form-data; name="x"', b"1", "")],
            "1000 parts": [(f'form-data; name="{f}"; filename="a.jpg"', b"x", "image/jpeg")] * 1000,
            "text/html part": [(f'form-data; name="{f}"; filename="a.jpg"', b"<script>", "text/html")],
            "huge part header": [(f'form-data; name="{f}"; filename="{"a" * 9000}.jpg"', jpeg, "image/jpeg")],
            "rfc2231 name": [(f"form-data; name*=utf-8''{f}; filename=\"a.jpg\"", jpeg, "image/jpeg")],
            "no parts": [],
        }
        for label, parts in bad_parts.items():
            cases.append((f"{path} {label}", request(path, [("Content-Type", mp)], multipart(parts)), "4xx"))
        one = multipart([(f'form-data; name="{f}"; filename="a.jpg"', jpeg, "image/jpeg")])
        for label, body in (("no closing boundary", one[:-20]), ("not multipart", b"just text"), ("empty", b""),
                            ("wrong boundary", one.replace(b"fuzzB0undary", b"otherB0undary")),
                            ("no part headers", b"--fuzzB0undary\r\n\r\nxx\r\n--fuzzB0undary--\r\n")):
            cases.append((f"{path} {label}", request(path, [("Content-Type", mp)], body), "4xx"))
    for label, body in (("json depth bomb", b"[" * 100_000), ("not json", b"{pixels"), ("wrong type", b'{"pixels": 5}'),
                        ("many tiny", json.dumps({"pixels": ["A"] * 3000}).encode()), ("null", b"null"),
                        ("number list", json.dumps({"pixels": [1] * 40}).encode())):
        cases.append((f"/infer {label}", request("/infer", [("Content-Type", "application/json")], body), "4xx"))
    return cases


def corpus(n: int, seed: int = 0) -> list[tuple[str, bytes, str]]:
    """At least n requests: every structural and image case, then seeded random byte mutations of
    valid requests until n (a mutation may still be valid: expect "any")."""
    rng = random.Random(seed)
    jpeg = _enc(Image.effect_noise((96, 80), 50).convert("RGB"), "JPEG")
    cases = structural(jpeg)
    for label, data, expect in odd_images(rng):
        for path in ("/predict", "/predict_batch"):
            cases.append((f"{path} {label}", photo_request(path, [data]), expect))
    valid = [photo_request("/predict", [jpeg]), photo_request("/predict_batch", [jpeg, jpeg])]
    while len(cases) < n:
        raw = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(raw))
            raw[i] = rng.randrange(256) if rng.random() < 0.7 else 0x0A
        cases.append(("mutated", bytes(raw), "any"))
    return cases


async def send(port: int, raw: bytes, timeout: float = 30.0) -> tuple[int, bytes, float]:
    """-> (status, body, seconds); status 0 when the server closed without an answer."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(raw)
        # a server may answer early (413, 431, a refused multipart part) and close before the whole
        # request is sent: the answer is still read
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        body = await asyncio.wait_for(reader.readexactly(length) if length is not None else reader.read(), timeout)
        return status, body, time.perf_counter() - t0
    except (asyncio.IncompleteReadError, ConnectionError):
        return 0, b"", time.perf_counter() - t0
    finally:
        writer.close()
