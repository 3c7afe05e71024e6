"""An attacker's corpus for bench/hardening.py: requests crafted from reading the code they pass through
(service/guard.py, python-multipart, Pillow's JPEG/PNG plugins, libjpeg-turbo, uvicorn's httptools
protocol, BentoML's request parsing and metrics), not drawn at random.

Each case is (class, label, raw request, expect): expect "4xx" (a JSON 4xx) or "any" (a valid but
costly photo: 200 or a JSON 4xx, within the time bound). Classes:
- params:    multipart/JSON Content-Type parameters BentoML/Starlette act on (charset, duplicates)
- decode:    photos within the byte and pixel limits that cost CPU: progressive JPEGs with many
             scans, JPEGs of fill bytes or empty markers, PNGs of empty chunks, large flat images
- multipart: bodies that make a per-part or per-byte parser loop: empty parts, many parts, part
             header floods, near-boundary data, preamble/epilogue
- http:      request heads past any sane size (uvicorn buffers them), chunked floods, pipelining
- paths:     unknown paths (Prometheus labels), a Host header in a redirect
"""
from __future__ import annotations

import io
import json
import struct
import zlib

from hostile import multipart, photo_request, request
from PIL import Image

MP = "multipart/form-data; boundary=fuzzB0undary"


def _enc(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """A JPEG -> its segments (marker, bytes), a scan with its entropy-coded data."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            break
        j = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:                      # entropy data runs to the next real marker
            while (j := data.index(b"\xff", j)) and (data[j + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7):
                j += 2
        out.append((marker, data[i:j]))
        i = j
    return out


def progressive_bomb(w: int, h: int, extra_scans: int) -> bytes:
    """A valid progressive JPEG of w x h grey pixels whose last AC scan is repeated `extra_scans`
    times: each repeat is ~14-60 bytes (one end-of-band run covers every block) but makes libjpeg
    walk the whole image again. ~0.75 ns per scan-pixel here: 1000 scans of 4 MP = 2.7 s."""
    segs = _jpeg_segments(_enc(Image.new("L", (w, h), 128), "JPEG", progressive=True, quality=90))
    scans = [s for m, s in segs if m == 0xDA]
    return b"\xff\xd8" + b"".join(s for _, s in segs) + scans[-1] * extra_scans + b"\xff\xd9"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_chunk_flood(n: int, after_idat: bool = False) -> bytes:
    """A 64x64 PNG with n empty private chunks before (Pillow's header loop) or after its image data
    (read by Pillow's load_end)."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    idat = _png_chunk(b"IDAT", zlib.compress(b"\0" * (64 * (64 * 3 + 1))))
    flood = _png_chunk(b"pvTe", b"") * n
    body = idat + flood if after_idat else flood + idat
    return b"\x89PNG\r\n\x1a\n" + ihdr + body + _png_chunk(b"IEND", b"")


def flat_png(w: int, h: int) -> bytes:
    """w x h black pixels in a few KB (zlib of zeros): the pixel limit, not the byte limit, bounds it."""
    rows = zlib.compress(b"\0" * ((w * 3 + 1) * h), 9)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b""))


def decode_cases(mb: float) -> list[tuple[str, bytes, str]]:
    n = int(mb * 2**20)
    face = _enc(Image.effect_noise((96, 80), 50).convert("RGB"), "JPEG")
    return [
        ("progressive 4 MP x 1000 scans", progressive_bomb(2000, 2000, 1000), "4xx"),
        ("progressive 36 MP x 100 scans", progressive_bomb(6000, 6000, 100), "4xx"),
        ("progressive 36 MP x 12 scans (within limits)", progressive_bomb(6000, 6000, 6), "any"),
        ("jpeg of fill bytes", b"\xff\xd8" + b"\xff" * (n - 2), "4xx"),
        ("jpeg of empty markers", b"\xff\xd8" + b"\xff\xfe\x00\x02" * ((n - 2) // 4), "4xx"),
        ("jpeg: empty markers then a face", face[:2] + b"\xff\xfe\x00\x02" * ((n - len(face)) // 4) + face[2:], "any"),
        ("png: empty chunks before IDAT", png_chunk_flood((n - 200) // 12), "4xx"),
        ("png: empty chunks after IDAT", png_chunk_flood((n - 200) // 12, after_idat=True), "any"),
        ("png: 36 MP of zeros (over the PNG/WebP budget)", flat_png(6000, 6000), "4xx"),
        ("webp: 16383 x 2400 flat (over the PNG/WebP budget)", _enc(Image.new("RGB", (16383, 2400)), "WEBP"), "4xx"),
        ("png: 12 MP of zeros (within limits)", flat_png(4000, 3000), "any"),
        ("webp: 12 MP flat (within limits)", _enc(Image.new("RGB", (4000, 3000)), "WEBP"), "any"),
        ("webp: 16383 x 732 flat (within limits)", _enc(Image.new("RGB", (16383, 732)), "WEBP"), "any"),
    ]


def multipart_cases(mb: float) -> list[tuple[str, bytes, str]]:
    n = int(mb * 2**20)
    face = _enc(Image.effect_noise((96, 80), 50).convert("RGB"), "JPEG")
    part = b'--fuzzB0undary\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n'
    one = multipart([('form-data; name="images"; filename="a.jpg"', face, "image/jpeg")])
    hdrs = "".join(f"X-H{i}: {'v' * 400}\r\n" for i in range(8))
    bodies = {
        "100k empty parts": (part + b"\r\n") * (n // (len(part) + 2)) + b"--fuzzB0undary--\r\n",
        "1-byte parts up to the limit": (part + b"x\r\n") * (n // (len(part) + 3)) + b"--fuzzB0undary--\r\n",
        "parts with 8 x 400-byte headers": (b"--fuzzB0undary\r\n" + hdrs.encode() + b"\r\nx\r\n") * 200,
        "near-boundary data in a photo": multipart([('form-data; name="images"; filename="a.jpg"',
                                                     b"\r\n--fuzzB0undar" * (n // 16), "image/jpeg")]),
        "preamble before the first part": b"x" * (n // 2) + b"\r\n" + one,
        "epilogue after the last part": one + b"y" * (n // 2),
        "headers without a blank line": b"--fuzzB0undary\r\n" + b"A: b\r\n" * (n // 6),
    }
    expect = {"epilogue after the last part": "any"}
    return [(k, request("/predict_batch", [("Content-Type", MP)], v), expect.get(k, "4xx")) for k, v in bodies.items()]


def params_cases() -> list[tuple[str, bytes, str]]:
    face = _enc(Image.effect_noise((96, 80), 50).convert("RGB"), "JPEG")
    one = multipart([('form-data; name="image"; filename="a.jpg"', face, "image/jpeg")])
    batch = multipart([('form-data; name="images"; filename="a.jpg"', face, "image/jpeg")])
    out = []
    for extra in ("charset=latin-1", "charset=bogus", "charset=utf-16", "charset=", "boundary=other", "x=1",
                  "boundary*=utf-8''x", "charset=utf-8; charset=bogus"):
        for path, body in (("/predict", one), ("/predict_batch", batch)):
            out.append((f"{path} {extra}", request(path, [("Content-Type", f"{MP}; {extra}")], body), "4xx"))
    pixels = json.dumps({"pixels": ["AAAA"]}).encode()
    for ctype in ("application/json; charset=utf-16", "application/json; charset=bogus", "application/json; x=1"):
        out.append((f"/infer {ctype}", request("/infer", [("Content-Type", ctype)], pixels), "4xx"))
    return out


def http_cases() -> list[tuple[str, bytes, str]]:
    livez = b"GET /livez HTTP/1.1\r\nHost: a\r\n"
    chunks = b"".join(b"1\r\nx\r\n" for _ in range(100_000)) + b"0\r\n\r\n"
    return [
        ("2 MB header", livez + b"X-Big: " + b"a" * 2**21 + b"\r\n\r\n", "4xx"),
        ("32 MB header", livez + b"X-Big: " + b"a" * 2**25 + b"\r\n\r\n", "4xx"),
        ("10k small headers", livez + b"".join(b"X-%d: v\r\n" % i for i in range(10_000)) + b"\r\n", "4xx"),
        ("1 MB URL", b"GET /livez?" + b"q" * 2**20 + b" HTTP/1.1\r\nHost: a\r\n\r\n", "4xx"),
        ("100k chunks to /predict", b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Type: " + MP.encode()
         + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks, "4xx"),
    ]


def path_cases(n: int) -> list[tuple[str, bytes, str]]:
    """Unknown paths, under no prefix and under the Swagger assets' mount; a redirect probe."""
    get = "GET {} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    out = [(f"unknown path {i}", get.format(f"/probe/{i}/{'x' * 100}").encode(), "4xx") for i in range(n)]
    out += [(f"unknown asset {i}", get.format(f"/static_content/{i}.js").encode(), "4xx") for i in range(n // 5)]
    return out + [("/docs/ with a foreign Host", get.format("/docs/").encode(), "4xx")]


def corpus(mb: float = 9.0, unknown_paths: int = 50) -> list[tuple[str, str, bytes, str]]:
    """(class, label, raw, expect) for every crafted case; `mb`: the size of the flood-type photos
    and bodies (keep it under max_upload_mb)."""
    out = [("params", *c) for c in params_cases()]
    out += [("decode", f"/predict {label}", photo_request("/predict", [data]), expect)
            for label, data, expect in decode_cases(mb)]
    out += [("multipart", *c) for c in multipart_cases(mb)]
    out += [("http", *c) for c in http_cases()]
    out += [("paths", *c) for c in path_cases(unknown_paths)]
    return out
