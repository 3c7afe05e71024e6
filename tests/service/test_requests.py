"""service/requests.py: the pure checks of a request's headers and multipart body (the guard applies them
as the bytes stream in: tests/service/test_guard.py)."""
import pytest

from service.requests import Refused, Route, check_headers, check_parts

ROUTE = Route(b"multipart/form-data", b"image", 1, 10_000, 5_000)
CTYPE = (b"content-type", b"multipart/form-data; boundary=XyZ")


def _part(name: str, payload: bytes, filename: str | None = "a.jpg", ctype: str = "image/jpeg") -> bytes:
    extra = f'; filename="{filename}"' if filename else ""
    return (f'--XyZ\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'
            f"Content-Type: {ctype}\r\n\r\n").encode() + payload + b"\r\n"


def test_names_are_read_from_each_parts_headers_never_from_the_photo_bytes():
    photo = b'\xff\xd8...\r\n--XyZ-not\r\nContent-Disposition: form-data; name="evil"...'
    assert check_parts(_part("image", photo) + b"--XyZ--\r\n", b"XyZ", ROUTE) == 1


@pytest.mark.parametrize("headers, status", [
    ([CTYPE, (b"content-length", b"10001")], 413),
    ([CTYPE, (b"content-length", b"10"), (b"content-length", b"10")], 400),
    ([CTYPE, (b"content-length", b"-1")], 400),
    ([CTYPE, CTYPE], 415),
    ([(b"content-type", b"multipart/form-data")], 400),                       # no boundary
    ([(b"content-type", b"multipart/form-data; boundary=" + b"b" * 71)], 400),
    ([(b"content-type", b"multipart/mixed; boundary=XyZ")], 415),
    # Starlette decodes part names with `charset` (an unknown one was a 500): only the boundary passes
    ([(b"content-type", b"multipart/form-data; charset=bogus; boundary=XyZ")], 400),
    ([(b"content-type", b"multipart/form-data; boundary=XyZ; charset=latin-1")], 400),
    ([(b"content-type", b"multipart/form-data; boundary=XyZ; charset=utf-8; charset=utf-8")], 400),
    ([(b"content-type", b"multipart/form-data; boundary=XyZ; boundary=Other")], 400),
    ([(b"content-type", b"multipart/form-data; boundary*=utf-8''XyZ")], 400),
    ([(b"content-type", b"multipart/form-data; boundary=XyZ; x=1")], 400),
])
def test_header_checks(headers, status):
    with pytest.raises(Refused) as e:
        check_headers(headers, ROUTE)
    assert e.value.status == status


JSON = Route(b"application/json", None, 0, 1000)


@pytest.mark.parametrize("ctype, ok", [(b"application/json", True), (b"application/json; charset=utf-8", True),
                                       (b"application/json; charset=UTF-8", True), (b"application/json; charset=utf-16", False),
                                       (b"application/json; x=1", False), (b"application/json; charset=utf-8; x=1", False)])
def test_a_json_route_takes_no_parameter_but_charset_utf8(ctype, ok):
    if ok:
        assert check_headers([(b"content-type", ctype)], JSON) == b""
    else:
        with pytest.raises(Refused) as e:
            check_headers([(b"content-type", ctype)], JSON)
        assert e.value.status == 400


@pytest.mark.parametrize("body, status, words", [
    (_part("photo", b"x"), 400, "unknown field 'photo'"),
    (_part("image", b"x", filename=None), 400, "must be a file upload"),
    (_part("image", b"x", ctype="text/html"), 415, "expected image/*"),
    (_part("image", b""), 400, "is empty"),
    (_part("image", b"x" * 5_001), 413, "over the limit of 5000"),
    (_part("image", b"x") + _part("image", b"y"), 400, "more than 1 files"),
    (b"", 400, "closing boundary"),
])
def test_a_body_that_breaks_a_rule_is_refused_with_its_reason(body, status, words):
    with pytest.raises(Refused) as e:
        check_parts(body + (b"--XyZ--\r\n" if body else b""), b"XyZ", ROUTE)
    assert e.value.status == status and words in e.value.reason


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_the_checked_files_bytes_are_kept_exactly_whatever_the_chunking(chunk):
    """The files the guard hands on (service/direct.py answers from them) are the parts' bytes, byte for
    byte, also where a chunk ends inside a boundary look-alike that python-multipart holds back and
    then gives back as data."""
    from service.requests import PartsCheck

    route = Route(b"multipart/form-data", b"images", 3, 10_000, 5_000)
    photos = [b"\xff\xd8" + b"\r\n--XyZ-almost\r\n--Xy" * 20 + b"\r\n-", b"\x89PNG\r\n", b"RIFF\r\n--XyZ\r"]
    body = b"".join(_part("images", p) for p in photos) + b"--XyZ--\r\n"
    check = PartsCheck(b"XyZ", route)
    for i in range(0, len(body), chunk):
        check.feed(body[i:i + chunk])
    assert check.finish() == 3 and check.files == photos
