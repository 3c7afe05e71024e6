"""service/decoder.py: the image path in killable child processes, with a CPU budget per photo."""
import asyncio
import io
import time

import pytest
from PIL import Image

from pipeline.core.preprocess import ImageError
from service.decoder import DecodePool, DecodeRefused

SETUP = {"size": 32, "max_pixels": 40_000_000, "threads": 1, "face": None}


def _jpeg(w=320, h=240) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((w, h), 50).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pool():
    p = DecodePool(1, SETUP, wall_s=20)
    yield p
    p.close()


def _slow_png() -> bytes:
    """A PNG the structure checks let through but whose decode takes ~0.3 s here (12 MP of noise)."""
    buf = io.BytesIO()
    Image.effect_noise((4000, 3000), 80).convert("RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_a_photo_comes_back_framed_with_its_pixel_count_and_cpu(pool):
    got = asyncio.run(pool.frame(_jpeg(), 1.0))
    assert got.framed.pixels.shape == (32, 32, 3) and got.pixels == 320 * 240 and 0 <= got.cpu_s < 1.0


def test_an_image_error_keeps_its_reason(pool):
    with pytest.raises(ImageError) as e:
        asyncio.run(pool.frame(b"not a photo", 1.0))
    assert e.value.reason == "not an image"


def test_a_decode_over_its_cpu_budget_is_killed_and_refused(pool):
    data, killed = _slow_png(), pool.killed
    t0 = time.monotonic()
    with pytest.raises(DecodeRefused) as e:
        asyncio.run(pool.frame(data, 0.05))
    assert e.value.status == 400 and "too costly" in e.value.reason and pool.killed == killed + 1
    assert time.monotonic() - t0 < 3.0                                   # includes the replacement's start
    assert asyncio.run(pool.frame(_jpeg(), 1.0)).pixels == 320 * 240     # the new child works


def test_a_client_leaving_stops_the_decode_within_a_poll(pool):
    data, killed = _slow_png(), pool.killed

    async def scenario():
        task = asyncio.ensure_future(pool.frame(data, 30.0))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t0 = time.monotonic()
        while pool.killed == killed and time.monotonic() - t0 < 2:
            await asyncio.sleep(0.01)
        return time.monotonic() - t0
    assert asyncio.run(scenario()) < 1.0 and pool.killed == killed + 1      # target: within 1 s


def test_a_child_killed_from_outside_is_replaced_and_the_request_told_to_retry(pool):
    t0 = time.monotonic()
    while pool.idle.empty() and time.monotonic() - t0 < 5:    # an earlier test's replacement starting
        time.sleep(0.01)
    child = pool.idle.queue[0]
    child.proc.kill()
    child.proc.wait()
    with pytest.raises(DecodeRefused) as e:
        asyncio.run(pool.frame(_jpeg(), 1.0))
    assert e.value.status == 503
    assert asyncio.run(pool.frame(_jpeg(), 1.0)).pixels == 320 * 240


def test_a_child_grown_past_its_memory_bound_is_replaced_after_a_big_photo():
    """RSS is read after every big photo (and every RSS_EVERY-th answer): a child over max_rss_mb is
    stopped and replaced, and the photo is still answered."""
    from service.decoder import RSS_EVERY, TRIM_PIXELS

    pool = DecodePool(1, SETUP, wall_s=20, max_rss_mb=1.0)        # every child is over 1 MB
    try:
        asyncio.run(pool.frame(_jpeg(), 1.0))
        assert pool.killed == 0                                   # a small photo: not read, not replaced
        got = asyncio.run(pool.frame(_jpeg(2400, 1800), 1.0))     # 4.3 MP > TRIM_PIXELS
        assert TRIM_PIXELS < 2400 * 1800 and got.pixels == 2400 * 1800 and pool.killed == 1
        for _ in range(RSS_EVERY):                                # small ones: read every RSS_EVERY-th
            asyncio.run(pool.frame(_jpeg(), 1.0))
        assert pool.killed == 2
    finally:
        pool.close()
