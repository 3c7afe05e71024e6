"""service/guard.py: field names come from the multipart part headers, never from the photo bytes."""
from service.guard import _field_names

CTYPE = "multipart/form-data; boundary=XyZ"


def _part(name: str, payload: bytes, filename: str | None = None) -> bytes:
    extra = f'; filename="{filename}"' if filename else ""
    return (f'--XyZ\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + payload + b"\r\n"


def test_names_are_read_from_each_parts_headers():
    body = _part("image", b"\xff\xd8jpeg", "a.jpg") + _part("note", b"hi") + b"--XyZ--\r\n"
    assert _field_names(body, CTYPE) == {b"image", b"note"}


def test_header_lookalikes_inside_a_photo_are_not_fields():
    photo = b'\xff\xd8...Content-Disposition: form-data; name="evil"...'
    assert _field_names(_part("image", photo, "a.jpg") + b"--XyZ--\r\n", CTYPE) == {b"image"}


def test_without_a_boundary_the_whole_body_is_searched():
    body = _part("photo", b"x", "a.jpg")
    assert _field_names(body, "multipart/form-data") == {b"photo"}
