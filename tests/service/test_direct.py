"""service/direct.py: the photo routes answered after the guard, exactly as BentoML's handler answers them."""
import asyncio
import io
import logging

import pytest
from PIL import Image
from test_service import _big_png, _gif  # the same odd photos as the service's own 4xx cases

from service import direct
from service.answers import NoFace
from service.requests import PHOTOS


def _img(seed: int = 0, size=(60, 50), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 40 + seed).convert("RGB").save(buf, fmt)
    return buf.getvalue()


def _files(path: str, photos: list[bytes]) -> list:
    field = "image" if path == "/predict" else "images"
    return [(field, (f"p{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]


REQUESTS = {
    "one photo": ("/predict", [_img()]),
    "three photos, in order": ("/predict_batch", [_img(1), _img(2, fmt="PNG"), _img(3)]),
    "not an image": ("/predict", [b"no image here"]),
    "truncated": ("/predict", [_img(size=(300, 300))[:900]]),
    "GIF": ("/predict", [_gif()]),
    "the second of two is bad": ("/predict_batch", [_img(), b"\xff\xd8 not really"]),
    "over the request's pixels": ("/predict_batch", [_big_png()] * 4),
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_direct_answers_are_bentomls_answers(client, monkeypatch, name):
    """The same request answered by service/direct.py (what HTTP clients get) and by BentoML's own
    handler (no handler registered, the body replayed to it): the same status, JSON, media type and
    Server header."""
    path, photos = REQUESTS[name]
    calls = []
    handler = direct.HANDLERS[path]

    async def counted(files):
        calls.append(len(files))
        return await handler(files)

    monkeypatch.setitem(direct.HANDLERS, path, counted)
    ours = client.post(path, files=_files(path, photos))
    from service import guard

    monkeypatch.setattr(direct, "HANDLERS", {})
    monkeypatch.setattr(guard.CURRENT, "photos_only", False)       # BentoML parses the body itself
    theirs = client.post(path, files=_files(path, photos))
    assert calls == [len(photos)]                                  # the first went the direct way
    assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json()), (ours.text, theirs.text)
    for h in ("content-type", "server"):
        assert ours.headers[h] == theirs.headers[h]


def _run(handler, scope=None):
    """One request through Direct (with `handler` for /predict) -> (status, headers, body, inner app calls)."""
    scope = scope or {"type": "http", "method": "POST", "path": "/predict", PHOTOS: [b"x"]}
    got, inner = {}, []

    async def app(scope, receive, send):
        inner.append(scope["path"])

    async def send(msg):
        if msg["type"] == "http.response.start":
            got["status"], got["headers"] = msg["status"], dict(msg["headers"])
        else:
            got["body"] = got.get("body", b"") + msg["body"]

    saved = dict(direct.HANDLERS)
    direct.HANDLERS.clear()
    direct.HANDLERS["/predict"] = handler
    try:
        asyncio.run(direct.Direct(app)(scope, None, send))
    finally:
        direct.HANDLERS.clear()
        direct.HANDLERS.update(saved)
    return got.get("status"), got.get("headers"), got.get("body"), inner


async def _never(files):
    raise AssertionError("not for this request")


@pytest.mark.parametrize("scope", [
    {"type": "http", "method": "POST", "path": "/predict"},                       # no photos: not the guard's
    {"type": "http", "method": "POST", "path": "/infer", PHOTOS: [b"x"]},         # no handler for the path
    {"type": "lifespan"},
])
def test_anything_else_goes_on_to_bentoml(scope):
    scope.setdefault("path", None)
    assert _run(_never, scope) == (None, None, None, [scope["path"]])


def test_a_handlers_failure_is_bentomls_500_with_no_detail_and_a_logged_traceback(caplog):
    async def broken(files):
        raise RuntimeError("secret /srv/path detail")

    with caplog.at_level(logging.ERROR, logger="bentoml._internal.server.http_app"):
        status, headers, body, inner = _run(broken)
    assert status == 500 and b"unexpected error" in body and b"secret" not in body and inner == []
    assert headers[b"content-length"] == str(len(body)).encode()
    assert any(r.exc_info and "secret" in str(r.exc_info[1]) for r in caplog.records)


@pytest.mark.parametrize("exc, status, shape", [
    (NoFace("no face found"), 422, [{"error": "no face found"}]),            # BentoML's one-element list
    (__import__("bentoml").exceptions.ServiceUnavailable("busy"), 503,
     {"error": direct.UNEXPECTED}),                                          # the guard makes it its own 503
    (ValueError("x"), 500, {"error": direct.UNEXPECTED}),
])
def test_errors_have_bentomls_shapes(exc, status, shape):
    assert direct.error_answer(exc) == (status, shape)


def test_a_cancelled_handler_answers_nothing():
    async def cancelled(files):
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        _run(cancelled)
