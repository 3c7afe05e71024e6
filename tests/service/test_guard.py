"""service/guard.py at the ASGI level: parsing, admission (503), body limits, client hang-ups."""
import asyncio
import json
import threading

from service.batcher import Batcher
from service.guard import UploadGuard
from service.requests import Route

ROUTE = Route(b"multipart/form-data", b"image", 1, 10_000, 5_000)
CTYPE = (b"content-type", b"multipart/form-data; boundary=XyZ")


def _part(name: str, payload: bytes, filename: str | None = "a.jpg") -> bytes:
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


def _guard(app, max_inflight=2):
    return UploadGuard(app, {"/predict": ROUTE}, max_inflight=max_inflight, retry_after_s=3)


def _ok_app(calls):
    async def app(scope, receive, send):
        calls.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
    return app


def test_a_declared_oversize_body_is_refused_before_a_byte_is_read():
    calls = []
    conn = Conn(headers=[CTYPE, (b"content-length", b"999999")])
    asyncio.run(_guard(_ok_app(calls))(conn.scope, conn.receive, conn.send))
    assert conn.status == 413 and conn.received == 0 and calls == []


def test_a_body_growing_past_the_limit_is_refused_while_streaming():
    calls = []
    head = _part("image", b"")[:-2]
    conn = Conn(chunks=[head] + [b"x" * 4000] * 5)                         # no Content-Length (chunked)
    asyncio.run(_guard(_ok_app(calls))(conn.scope, conn.receive, conn.send))
    assert conn.status == 413 and conn.received == 3 and calls == []
    assert conn.headers[b"connection"] == b"close"          # the rest of the body is never read


def test_a_valid_body_is_handed_to_the_app_in_one_piece():
    calls = []
    body = _part("image", b"\xff\xd8jpeg") + b"--XyZ--\r\n"
    conn = Conn(chunks=[body[:10], body[10:]])
    asyncio.run(_guard(_ok_app(calls))(conn.scope, conn.receive, conn.send))
    assert conn.status == 200 and calls == [body]


def test_beyond_max_inflight_the_answer_is_503_with_retry_after_at_once():
    body = _part("image", b"\xff\xd8") + b"--XyZ--\r\n"
    release = asyncio.Event()

    async def slow(scope, receive, send):
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def scenario():
        guard = _guard(slow, max_inflight=2)
        conns = [Conn(chunks=[body]) for _ in range(3)]
        tasks = [asyncio.ensure_future(guard(c.scope, c.receive, c.send)) for c in conns[:2]]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(guard(conns[2].scope, conns[2].receive, conns[2].send), 0.1)   # not queued
        assert conns[2].status == 503 and conns[2].headers[b"retry-after"] == b"3"
        assert conns[2].received == 0 and "retry" in json.loads(conns[2].body)["error"]
        release.set()
        await asyncio.gather(*tasks)
        assert [c.status for c in conns[:2]] == [200, 200] and guard.inflight == 0
        again = Conn(chunks=[body])
        await guard(again.scope, again.receive, again.send)
        assert again.status == 200                                       # admitted again once drained

    asyncio.run(scenario())


def test_a_client_gone_mid_upload_never_reaches_the_app():
    calls = []
    conn = Conn(chunks=[b"--XyZ\r\n", None])                             # half a body, then the hang-up
    guard = _guard(_ok_app(calls))
    asyncio.run(guard(conn.scope, conn.receive, conn.send))
    # 499 goes to nobody (the client is gone); it ends BentoML's wait for a first send
    assert calls == [] and conn.status == 499 and guard.inflight == 0


def test_a_client_gone_while_queued_is_cancelled_and_its_photo_never_reaches_the_model():
    """The model is busy with photo A; B and C queue; B's client hangs up: only A and C are run."""
    seen, started, release = [], threading.Event(), threading.Event()

    def forward(batch):
        seen.extend(batch)
        started.set()
        release.wait(5)
        return batch

    async def scenario():
        batcher = Batcher(forward, max_batch=8)

        async def app(scope, receive, send):
            body = (await receive())["body"]
            out = await batcher.run([body[-1:]])                          # the photo's last byte as its id
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": out[0]})

        guard = _guard(app, max_inflight=8)
        conns = {k: Conn(chunks=[b"p" + k], hang_up_after_body=True) for k in (b"A", b"B", b"C")}
        for c in conns.values():
            c.scope["headers"] = [(b"content-type", b"multipart/form-data")]
        # the guard parses multipart: bypass it for this test by patching the route to JSON
        guard.routes = {"/predict": Route(b"multipart/form-data", None, 0, 100)}
        a = asyncio.ensure_future(guard(conns[b"A"].scope, conns[b"A"].receive, conns[b"A"].send))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        rest = [asyncio.ensure_future(guard(conns[k].scope, conns[k].receive, conns[k].send)) for k in (b"B", b"C")]
        await asyncio.sleep(0.02)
        conns[b"B"].gone.set()                                           # B hangs up while queued
        await asyncio.sleep(0.02)
        release.set()
        await asyncio.gather(a, *rest)
        assert guard.inflight == 0 and not batcher._queue
        return [c.status for c in conns.values()]

    statuses = asyncio.run(scenario())
    assert seen == [b"A", b"C"] and statuses == [200, 499, 200]


def test_a_body_trickled_too_slowly_is_a_408_and_frees_its_slot():
    calls = []

    body = _part("image", b"\xff\xd8" * 100)

    class Slow(Conn):
        async def receive(self):
            self.received += 1
            await asyncio.sleep(0.03)
            return {"type": "http.request", "body": body[self.received - 1:self.received], "more_body": True}

    conn = Slow()
    guard = UploadGuard(_ok_app(calls), {"/predict": ROUTE}, max_inflight=2, retry_after_s=1, read_timeout_s=0.1)
    asyncio.run(guard(conn.scope, conn.receive, conn.send))
    assert conn.status == 408 and calls == [] and guard.inflight == 0 and conn.received <= 5


def test_empty_parts_are_refused_at_the_first_one_before_the_rest_arrives():
    empty = b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n\r\n'
    conn = Conn(chunks=[empty * 2, empty * 100, empty * 100, b"--XyZ--\r\n"])
    route = Route(b"multipart/form-data", b"image", 32, 10**6, 5_000)
    guard = UploadGuard(_ok_app([]), {"/predict": route}, max_inflight=2, retry_after_s=1)
    asyncio.run(guard(conn.scope, conn.receive, conn.send))
    assert conn.status == 400 and "empty" in json.loads(conn.body)["error"] and conn.received == 1


def test_the_file_after_the_last_allowed_one_is_refused_when_it_begins():
    one = _part("image", b"\xff\xd8")
    conn = Conn(chunks=[one, one, b"x" * 4000, b"--XyZ--\r\n"])            # max_files = 1
    asyncio.run(_guard(_ok_app([]))(conn.scope, conn.receive, conn.send))
    assert conn.status == 400 and "more than 1 files" in json.loads(conn.body)["error"] and conn.received == 2


def test_a_slow_body_holds_no_model_slot_once_it_is_slow(monkeypatch):
    """max_inflight=1: a body arriving at full speed holds the slot (overload is shed before reading);
    past SLOW_AFTER_S it no longer does, and a whole request is admitted and answered meanwhile."""
    monkeypatch.setattr("service.guard.SLOW_AFTER_S", 0.05)
    body = _part("image", b"\xff\xd8") + b"--XyZ--\r\n"
    calls: list = []

    class Trickle(Conn):
        async def receive(self):
            self.received += 1
            await asyncio.sleep(0.02)
            return {"type": "http.request", "body": body[:1] if self.received == 1 else b"", "more_body": True}

    async def scenario():
        guard = UploadGuard(_ok_app(calls), {"/predict": ROUTE}, max_inflight=1, retry_after_s=1, read_timeout_s=0.5)
        slow, fast = Trickle(), Conn(chunks=[body])
        trickling = asyncio.ensure_future(guard(slow.scope, slow.receive, slow.send))
        await asyncio.sleep(0.01)
        early = Conn(chunks=[body])
        await guard(early.scope, early.receive, early.send)
        assert early.status == 503 and guard.fast_reading == 1           # still arriving at full speed
        await asyncio.sleep(0.1)
        assert guard.reading == 1 and guard.fast_reading == 0 and guard.inflight == 0
        await asyncio.wait_for(guard(fast.scope, fast.receive, fast.send), 0.2)
        await trickling
        return slow.status, fast.status
    assert asyncio.run(scenario()) == (408, 200) and calls == [body]


def test_bodies_past_the_buffer_budget_are_shed_with_retry_after():
    conn = Conn(chunks=[_part("image", b"\xff" * 3000), b"--XyZ--\r\n"])
    guard = UploadGuard(_ok_app([]), {"/predict": ROUTE}, max_inflight=2, retry_after_s=2, max_buffered_mb=1000 / 2**20)
    asyncio.run(guard(conn.scope, conn.receive, conn.send))
    assert conn.status == 503 and conn.headers[b"retry-after"] == b"2" and guard.buffered == 0 and guard.reading == 0


def test_a_503_from_inside_becomes_the_guards_own_with_retry_after():
    async def busy(scope, receive, send):      # what BentoML's batch dispatcher answers when it sheds
        await receive()
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"Service Busy"})

    conn = Conn(chunks=[_part("image", b"\xff\xd8") + b"--XyZ--\r\n"])
    asyncio.run(_guard(busy)(conn.scope, conn.receive, conn.send))
    assert conn.status == 503 and conn.headers[b"retry-after"] == b"3"
    assert json.loads(conn.body) == {"error": "server busy, retry later"}


def test_the_idle_hook_runs_once_nothing_is_read_or_processed():
    idle: list = []
    body = _part("image", b"\xff\xd8") + b"--XyZ--\r\n"
    guard = UploadGuard(_ok_app([]), {"/predict": ROUTE}, max_inflight=2, retry_after_s=1, idle=lambda: idle.append(1))

    async def two():
        for _ in range(2):
            conn = Conn(chunks=[body])
            await guard(conn.scope, conn.receive, conn.send)
    asyncio.run(two())
    assert idle == [1]                     # the second, within 5 s, only schedules a later check


def test_a_utf8_charset_is_accepted_and_never_reaches_the_app():
    """Spring's RestTemplate and others add charset=UTF-8 to multipart/form-data: accepted, and the
    app (BentoML, Starlette's parser) sees the media type and boundary alone."""
    seen = []

    async def app(scope, receive, send):
        seen.append(dict(scope["headers"])[b"content-type"])
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    conn = Conn(chunks=[_part("image", b"\xff\xd8") + b"--XyZ--\r\n"],
                headers=[(b"content-type", b'multipart/form-data; charset=UTF-8; boundary="XyZ"')])
    asyncio.run(_guard(app)(conn.scope, conn.receive, conn.send))
    assert conn.status == 200 and seen == [b"multipart/form-data; boundary=XyZ"]


def test_early_shedding_answers_before_the_app_when_the_guard_would_shed():
    """EarlyShed (outermost, before BentoML's middlewares) reads the worker's guard: the same 503."""
    from service import guard as g

    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    full = _guard(_ok_app([]), max_inflight=1)
    early = g.EarlyShed(app)
    conn = Conn(chunks=[b""])
    asyncio.run(early(conn.scope, conn.receive, conn.send))
    assert reached == ["/predict"]                                   # not full: passed on
    full.inflight = 1
    conn = Conn(chunks=[b""])
    asyncio.run(early(conn.scope, conn.receive, conn.send))
    assert conn.status == 503 and conn.headers[b"retry-after"] == b"3" and reached == ["/predict"]


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
    body = _part("image", b"\xff\xd8jp\r\n--XyZeg") + b"--XyZ--\r\n"
    conn = Conn(chunks=[body[:50], body[50:]])
    asyncio.run(_guard(app)(conn.scope, conn.receive, conn.send))
    assert conn.status == 200 and seen == [([b"\xff\xd8jp\r\n--XyZeg"], body)]


def test_photos_only_hands_on_the_files_and_never_holds_the_body_twice():
    seen = []
    app = _photos_app(seen)
    body = _part("image", b"\xff\xd8" + b"x" * 3000) + b"--XyZ--\r\n"
    guard = UploadGuard(app, {"/predict": ROUTE}, max_inflight=2, retry_after_s=1, photos_only=True)
    conn = Conn(chunks=[body[:1000], body[1000:]])
    asyncio.run(guard(conn.scope, conn.receive, conn.send))
    assert conn.status == 200 and seen == [([b"\xff\xd8" + b"x" * 3000], b"")] and guard.buffered == 0
    big = Conn(chunks=[body[:1000], b"y" * 9500])                          # still counted against the limit
    asyncio.run(guard(big.scope, big.receive, big.send))
    assert big.status == 413 and guard.buffered == 0
