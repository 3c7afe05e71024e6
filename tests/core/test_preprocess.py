import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.core.preprocess import (
    MEAN,
    STD,
    ImageError,
    decode_rgb,
    fit_square,
    load_uint8,
    open_image,
    open_rgb,
    sniff,
    to_tensor,
)

from conftest import ROOT


def _encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = load_uint8(_encode(img, fmt), 16, 10**6)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert open_rgb(_encode(img), 10**6).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))           # left half white
    exif = Image.Exif()
    exif[0x0112] = 6                                     # "rotate 90 CW to display"
    out = open_rgb(_encode(img, "JPEG", exif=exif.tobytes()), 10**6)
    assert out.size == (20, 40)
    assert np.asarray(out)[:10].mean() > 200 and np.asarray(out)[30:].mean() < 50   # white is now on top


def test_fit_square_centre_crops_instead_of_squashing():
    img = Image.new("RGB", (300, 100), (0, 0, 0))
    img.paste((255, 255, 255), (100, 0, 200, 100))       # the white centre square survives
    assert fit_square(img, 10).mean() > 250


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"this is not an image at all", "not an image"),
])
def test_unusable_bytes(data, reason):
    with pytest.raises(ImageError) as e:
        open_rgb(data, 10**6)
    assert e.value.reason == reason


def test_truncated_jpeg_is_refused():
    data = _encode(Image.effect_noise((256, 256), 60).convert("RGB"), "JPEG")
    with pytest.raises(ImageError) as e:
        open_rgb(data[: len(data) // 2], 10**6)
    assert e.value.reason == "truncated image"


def test_decompression_bomb_is_refused_before_decoding():
    data = _encode(Image.new("L", (3000, 3000)), "PNG")    # compresses to a few KB
    with pytest.raises(ImageError) as e:
        open_rgb(data, max_pixels=1_000_000)
    assert e.value.reason == "decompression bomb"


def test_to_tensor_shape_range_and_normalisation():
    batch = np.zeros((2, 8, 8, 3), np.uint8)
    batch[1] = 255
    x = to_tensor(batch)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full_like(x[0], (0 - MEAN[0]) / STD[0]))
    assert torch.allclose(x[1], torch.full_like(x[1], (1 - MEAN[0]) / STD[0]))
    assert to_tensor(batch[0]).shape == (1, 3, 8, 8)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO"])
def test_only_allow_listed_decoders_open_and_a_refused_format_is_named(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, fmt)
    with pytest.raises(ImageError) as e:
        open_rgb(buf.getvalue(), 10**6)
    assert e.value.reason == f"unsupported format {fmt} (send JPEG, PNG, WebP, HEIC/HEIF or AVIF)"


@pytest.mark.parametrize("head, name", [
    (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", "ISO media (mp42; a video?)"), (b"%PDF-1.7\n", "PDF"),
    (b"  <svg xmlns='x'>", "SVG"), (b"\xff\x0a\x00", "JPEG XL"), (b"hello", None), (b"", None),
])
def test_sniff_names_formats_without_parsing_them(head, name):
    assert sniff(head) == name


def test_heic_opens_through_the_same_path_and_bounds(tmp_path):
    """A phone's HEIC decodes like a JPEG of the same photo; AVIF too; both keep the full-decode budget."""
    heic = (ROOT / "tests" / "fixtures" / "example.heic").read_bytes()       # made from service/example.jpg
    img = open_image(heic, 10**6)
    assert img.format == "HEIF" and img.size == (160, 160)
    ref = np.asarray(open_rgb(ROOT / "service" / "example.jpg", 10**6), np.float64)
    assert np.abs(np.asarray(decode_rgb(img), np.float64) - ref).mean() < 6          # lossy codecs, same photo
    buf = io.BytesIO()
    Image.new("RGB", (4400, 3100), (9, 9, 9)).save(buf, "AVIF", quality=30)
    with pytest.raises(ImageError) as e:
        open_image(buf.getvalue(), 10**8)
    assert e.value.reason == "too many pixels for its format" and "AVIF 4400x3100" in e.value.detail
    buf = io.BytesIO()
    Image.fromarray(ref.astype(np.uint8)).save(buf, "AVIF", quality=80)
    assert open_image(buf.getvalue(), 10**6).format == "AVIF"


def test_any_decoder_exception_is_an_image_error(monkeypatch):
    """Decoders raise more than OSError (struct.error, IndexError, ...): all are a bad file, never a 500."""
    from PIL import ImageFile

    from pipeline.core import preprocess

    def explode(self):
        raise IndexError("decoder bug")

    lazy = preprocess.open_image(_encode(Image.new("RGB", (8, 8))), 10**6)
    monkeypatch.setattr(ImageFile.ImageFile, "load", explode)
    with pytest.raises(ImageError) as e:
        preprocess.decode_rgb(lazy)
    assert e.value.reason == "corrupt image" and e.value.detail == "IndexError"


def test_big_jpegs_decode_in_draft_mode_close_to_a_full_decode():
    from pipeline.core.preprocess import DRAFT_FACTOR, lazy_uint8, open_image

    big = Image.radial_gradient("L").resize((1200, 1000)).convert("RGB")     # smooth, like a face photo
    data = _encode(big, "JPEG", quality=92)
    img = open_image(data, 10**7)
    img.draft(img.mode, (1200 // 4, 1000 // 4))
    assert img.size == (300, 250)                         # the decoder does scale by 1/4 here
    drafted = lazy_uint8(open_image(data, 10**7), 64)     # min side 1000 >= 4 * 2 * 64: 1/4 scale
    full = fit_square(open_rgb(data, 10**7), 64)          # min_side 0: no draft
    assert DRAFT_FACTOR == 2 and drafted.shape == full.shape == (64, 64, 3)
    assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 2.0


def test_a_multi_frame_image_uses_its_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((250, 0, 0), (0, 0, 250))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert tuple(load_uint8(buf.getvalue(), 8, 10**6)[4, 4]) == (250, 0, 0)


# Photos within the byte and pixel limits that would cost seconds of CPU (bench/attacks.py crafts them)
def _attacks():
    import sys

    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "bench"))
    import attacks
    return attacks


@pytest.mark.parametrize("case, reason", [
    (lambda a: a.progressive_bomb(2000, 2000, 1000), "too many scans"),           # 2.7 s in Pillow
    (lambda a: a.progressive_bomb(6000, 6000, 30), "too many scans"),             # 36 scans x 36 MP
    (lambda a: b"\xff\xd8" + b"\xff" * 5_000_000, "too many markers"),            # fill bytes
    (lambda a: b"\xff\xd8" + b"\xff\xfe\x00\x02" * 300_000, "too many markers"),  # empty comments
    (lambda a: a.png_chunk_flood(30_000), "too many chunks"),
    (lambda a: a.png_chunk_flood(30_000, after_idat=True), "too many chunks"),
    (lambda a: a.flat_png(4200, 3001), "too many pixels for its format"),         # > 12.6 MP PNG: no draft
])
def test_files_that_make_the_decoder_loop_are_refused_from_their_structure(case, reason):
    import time

    data = case(_attacks())
    t0 = time.process_time()
    with pytest.raises(ImageError) as e:
        open_rgb(data, 40_000_000)
    assert e.value.reason == reason and time.process_time() - t0 < 0.2


def test_ordinary_progressive_jpegs_and_big_jpegs_still_open():
    a = _attacks()
    assert open_rgb(a.progressive_bomb(1000, 800, 0), 40_000_000).size == (1000, 800)     # 6 scans
    assert open_rgb(a.progressive_bomb(1000, 800, 40), 40_000_000).size == (1000, 800)    # 46 scans x 0.8 MP
    big = _encode(Image.new("RGB", (6000, 4000)), "JPEG")                                  # 24 MP: draft-decoded
    assert open_rgb(big, 40_000_000).size == (6000, 4000)
    assert open_rgb(a.flat_png(4000, 3000), 40_000_000).size == (4000, 3000)            # 12 MP PNG: allowed
