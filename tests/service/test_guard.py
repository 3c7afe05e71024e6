"""service/guard.py at the ASGI level: parsing, body limits, client hang-ups mid-upload, what the app
is handed (admission and shedding: test_guard_admission.py)."""
import asyncio
import json

from guardconn import (
    CTYPE,
    ROUTE,
    Conn,
    guard_of,
    ok_app,
    part,
    restore_current_guard,  # noqa: F401 - autouse: the service's guard stays CURRENT
)

from service.guard import UploadGuard
from service.requests import Route


def test_a_declared_oversize_body_is_refused_before_a_byte_is_read():
    calls = []
    conn = Conn(headers=[CTYPE, (b"content-length", b"999999")])
    asyncio.run(guard_of(ok_app(calls))(conn.scope, conn.receive, conn.send))
    assert conn.status == 413 and conn.received == 0 and calls == []


def test_a_body_growing_past_the_limit_is_refused_while_streaming():
    calls = []
    head = part("image", b"")[:-2]
    conn = Conn(chunks=[head] + [b"x" * 4000] * 5)                         # no Content-Length (chunked)
    asyncio.run(guard_of(ok_app(calls))(conn.scope, conn.receive, conn.send))
    assert conn.status == 413 and conn.received == 3 and calls == []
    assert conn.headers[b"connection"] == b"close"          # the rest of the body is never read


def test_a_valid_body_is_handed_to_the_app_in_one_piece():
    calls = []
    body = part("image", b"\xff\xd8jpeg") + b"--XyZ--\r\n"
    conn = Conn(chunks=[body[:10], body[10:]])
    asyncio.run(guard_of(ok_app(calls))(conn.scope, conn.receive, conn.send))
    assert conn.status == 200 and calls == [body]


def test_a_client_gone_mid_upload_never_reaches_the_app():
    calls = []
    conn = Conn(chunks=[b"--XyZ\r\n", None])                             # half a body, then the hang-up
    guard = guard_of(ok_app(calls))
    asyncio.run(guard(conn.scope, conn.receive, conn.send))
    # 499 goes to nobody (the client is gone); it ends BentoML's wait for a first send
    assert calls == [] and conn.status == 499 and guard.inflight == 0


def test_a_body_trickled_too_slowly_is_a_408_and_frees_its_slot():
    calls = []

    body = part("image", b"\xff\xd8" * 100)

    class Slow(Conn):
        async def receive(self):
            self.received += 1
            await asyncio.sleep(0.03)
            return {"type": "http.request", "body": body[self.received - 1:self.received], "more_body": True}

    conn = Slow()
    guard = UploadGuard(ok_app(calls), {"/predict": ROUTE}, max_inflight=2, retry_after_s=1, read_timeout_s=0.1)
    asyncio.run(guard(conn.scope, conn.receive, conn.send))
    assert conn.status == 408 and calls == [] and guard.inflight == 0 and conn.received <= 5


def test_empty_parts_are_refused_at_the_first_one_before_the_rest_arrives():
    empty = b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n\r\n'
    conn = Conn(chunks=[empty * 2, empty * 100, empty * 100, b"--XyZ--\r\n"])
    route = Route(b"multipart/form-data", b"image", 32, 10**6, 5_000)
    guard = UploadGuard(ok_app([]), {"/predict": route}, max_inflight=2, retry_after_s=1)
    asyncio.run(guard(conn.scope, conn.receive, conn.send))
    assert conn.status == 400 and "empty" in json.loads(conn.body)["error"] and conn.received == 1


def test_the_file_after_the_last_allowed_one_is_refused_when_it_begins():
    one = part("image", b"\xff\xd8")
    conn = Conn(chunks=[one, one, b"x" * 4000, b"--XyZ--\r\n"])            # max_files = 1
    asyncio.run(guard_of(ok_app([]))(conn.scope, conn.receive, conn.send))
    assert conn.status == 400 and "more than 1 files" in json.loads(conn.body)["error"] and conn.received == 2


def test_a_utf8_charset_is_accepted_and_never_reaches_the_app():
    """Spring's RestTemplate and others add charset=UTF-8 to multipart/form-data: accepted, and the
    app (BentoML, Starlette's parser) sees the media type and boundary alone."""
    seen = []

    async def app(scope, receive, send):
        seen.append(dict(scope["headers"])[b"content-type"])
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    conn = Conn(chunks=[part("image", b"\xff\xd8") + b"--XyZ--\r\n"],
                headers=[(b"content-type", b'multipart/form-data; charset=UTF-8; boundary="XyZ"')])
    asyncio.run(guard_of(app)(conn.scope, conn.receive, conn.send))
    assert conn.status == 200 and seen == [b"multipart/form-data; boundary=XyZ"]


def _photos_app(seen):
    """An app that records (the photos the guard handed on in the scope, the body it replayed)."""
    from service.requests import PHOTOS

    async def app(scope, receive, send):
        seen.append((scope.get(PHOTOS), (await receive())["body"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
    return app


def test_the_checked_photos_go_on_in_the_scope_and_the_body_in_one_piece():
    seen = []
    app = _photos_app(seen)
    body = part("image", b"\xff\xd8jp\r\n--XyZeg") + b"--XyZ--\r\n"
    conn = Conn(chunks=[body[:50], body[50:]])
    asyncio.run(guard_of(app)(conn.scope, conn.receive, conn.send))
    assert conn.status == 200 and seen == [([b"\xff\xd8jp\r\n--XyZeg"], body)]


def test_photos_only_hands_on_the_files_and_never_holds_the_body_twice():
    seen = []
    app = _photos_app(seen)
    body = part("image", b"\xff\xd8" + b"x" * 3000) + b"--XyZ--\r\n"
    guard = UploadGuard(app, {"/predict": ROUTE}, max_inflight=2, retry_after_s=1, photos_only=True)
    conn = Conn(chunks=[body[:1000], body[1000:]])
    asyncio.run(guard(conn.scope, conn.receive, conn.send))
    assert conn.status == 200 and seen == [([b"\xff\xd8" + b"x" * 3000], b"")] and guard.buffered == 0
    big = Conn(chunks=[body[:1000], b"y" * 9500])                          # still counted against the limit
    asyncio.run(guard(big.scope, big.receive, big.send))
    assert big.status == 413 and guard.buffered == 0
