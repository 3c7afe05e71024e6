"""service/frontdoor.py: uvicorn's httptools protocol with connection bounds, and the outermost ASGI
layer (unknown-path labels, relative redirects, security headers), on a real uvicorn on loopback."""
import contextlib
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.routing import Route

from service import frontdoor, outer

from conftest import free_port

SEEN: list[str] = []


async def echo(request):
    SEEN.append(request.url.path)
    body = await request.body()
    return JSONResponse({"path": request.url.path, "bytes": len(body)})


APP = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"]),
                        Route("/page", lambda r: HTMLResponse("<p>hi</p>")),
                        Route("/away", lambda r: RedirectResponse("http://evil.example/echo?q=1"))])


@pytest.fixture(scope="module")
def port():
    saved = frontdoor.BOUNDS, frontdoor.WRAP          # service.service may have installed its own
    frontdoor.install(frontdoor.Bounds(header_timeout_s=1.0, max_header_bytes=2048, body_timeout_s=2.0,
                                       keep_alive_s=1.0, max_connections=20))
    p = free_port()
    server = uvicorn.Server(uvicorn.Config(APP, host="127.0.0.1", port=p, log_level="error", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", p)) == 0:
                break
        time.sleep(0.05)
    yield p
    server.should_exit = True
    frontdoor.install(*saved)


def _exchange(port: int, data: bytes, wait: float = 5.0) -> tuple[bytes, float]:
    """Sends `data`, reads until the server closes -> (everything read, seconds until closed)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(wait)
        t0, out = time.monotonic(), b""
        with contextlib.suppress(OSError):
            s.sendall(data)
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out, time.monotonic() - t0


def test_a_normal_request_passes_with_nosniff(port):
    out, _ = _exchange(port, b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"x-content-type-options: nosniff" in out


@pytest.mark.parametrize("head", [
    b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",                 # one huge header
    b"GET /echo HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(400)) + b"\r\n",  # many
    b"GET /echo?" + b"q" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",                               # long URL
])
def test_a_head_over_the_limit_is_a_431_and_closed(port, head):
    out, dt = _exchange(port, head)
    assert out.startswith(b"HTTP/1.1 431") and b'"error"' in out and dt < 3


@pytest.mark.parametrize("sent", [b"", b"GET /echo HTTP/1.1\r\nHo"])
def test_idle_and_half_sent_heads_are_closed_at_the_header_deadline(port, sent):
    out, dt = _exchange(port, sent)
    assert out.startswith(b"HTTP/1.1 408") and 0.9 < dt < 2.5


def test_a_keep_alive_connection_is_closed_when_idle(port):
    out, dt = _exchange(port, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.count(b"HTTP/1.1") == 1 and dt < 2.5


def test_a_body_that_never_completes_is_cut_at_the_body_deadline(port):
    out, dt = _exchange(port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
    assert b"408" in out.split(b"\r\n")[0] and 1.8 < dt < 4


def test_an_early_answer_reaches_a_client_still_sending(port):
    """A 431 on a connection whose client keeps writing: a plain close would reset it, and the
    client would never read the answer (lingering close reads and drops the rest)."""
    out, _ = _exchange(port, b"GET /echo HTTP/1.1\r\nX-Big: " + b"a" * 4_000_000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431")


def test_unknown_paths_reach_the_app_as_one_label(port):
    SEEN.clear()
    out, _ = _exchange(port, b"GET /nowhere/123 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404")
    _exchange(port, b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert SEEN == ["/echo"]
    assert outer.route_paths(APP) == (frozenset({"/echo", "/page", "/away"}), ())


def test_redirects_are_relative_and_html_gets_security_headers(port):
    out, _ = _exchange(port, b"GET /away HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    assert b"location: /echo?q=1\r\n" in out and b"evil" not in out.split(b"\r\n\r\n")[0]
    out, _ = _exchange(port, b"GET /page HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head = out.split(b"\r\n\r\n")[0].lower()
    assert b"content-security-policy: default-src 'self'" in head and b"x-frame-options: deny" in head


def test_connections_past_the_cap_get_503_and_are_closed(port):
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(25)]
    try:
        time.sleep(0.2)
        answers = []
        for s in held:
            s.settimeout(0.05)
            with contextlib.suppress(TimeoutError):
                answers.append(s.recv(200))
        shed = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(shed) >= 5 and all(b"retry-after: 1" in a for a in shed)      # 25 held, cap 20
    finally:
        for s in held:
            s.close()


def test_install_makes_frontdoor_uvicorns_default_protocol_around_the_wrapped_app():
    import uvicorn.config

    saved = frontdoor.BOUNDS, frontdoor.WRAP
    try:
        frontdoor.install(frontdoor.Bounds(), wrap=lambda app: ("wrapped", app))
        assert uvicorn.config.HTTP_PROTOCOLS["auto"] == "service.frontdoor:FrontDoor"
        assert frontdoor.outer(APP).app == ("wrapped", APP)
    finally:
        frontdoor.install(*saved)
