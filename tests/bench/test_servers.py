"""bench/servers.py: a stopped server leaves nothing of its process group running; the load client reads
every answer whole, and counts only 200s; a clone without packaged models gets a one-line exit."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from servers import answer, load, stop, use_champions  # noqa: E402


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_stop_kills_a_group_that_ignores_sigterm_and_the_leftovers_of_one_that_exits(tmp_path):
    # a server that ignores SIGTERM, and one whose leader exits on SIGTERM but leaves a worker behind
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 60 & wait"], start_new_session=True)
    leaky = subprocess.Popen(["bash", "-c", f"(trap '' TERM; sleep 60) & echo $! > {tmp_path}/w; wait"],
                             start_new_session=True)
    for _ in range(100):
        if (tmp_path / "w").is_file() and (tmp_path / "w").read_text().strip():
            break
        time.sleep(0.05)
    worker = int((tmp_path / "w").read_text())
    t0 = time.monotonic()
    stop([stubborn, leaky], grace_s=1.0)
    assert time.monotonic() - t0 < 10
    assert stubborn.poll() is not None and leaky.poll() is not None
    time.sleep(0.2)
    assert not _alive(worker)


def test_answers_are_read_whole_with_a_length_or_chunked():
    import asyncio

    async def read(raw: bytes):
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await answer(reader), await reader.read()

    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello"
    chunked = b"HTTP/1.1 422 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[{\"\r\n4;ext=1\r\n}]xy\r\n0\r\n\r\n"
    assert asyncio.run(read(sized + b"NEXT")) == ((200, b"hello"), b"NEXT")      # nothing of the next one read
    assert asyncio.run(read(chunked + b"NEXT")) == ((422, b'[{"}]xy'), b"NEXT")


def test_the_load_client_sends_n_requests_over_its_connections_and_refuses_a_non_200():
    import asyncio
    import contextlib
    import threading

    import pytest

    seen, conns = [], set()

    async def serve(status: bytes, ready: threading.Event, box: list):
        async def handle(reader, writer):
            conns.add(id(writer))
            while (line := await reader.readline()):
                if line == b"\r\n":
                    seen.append(1)
                    writer.write(b"HTTP/1.1 " + status + b" X\r\nContent-Length: 2\r\n\r\nok")
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        box.append((server.sockets[0].getsockname()[1], asyncio.get_running_loop(), server))
        ready.set()
        with contextlib.suppress(asyncio.CancelledError):      # closed by the test
            async with server:
                await server.serve_forever()

    def start(status: bytes):
        ready, box = threading.Event(), []
        threading.Thread(target=asyncio.run, args=(serve(status, ready, box),), daemon=True).start()
        ready.wait(5)
        return box[0]

    port, loop, server = start(b"200")
    load(f"http://127.0.0.1:{port}", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 4, 10)
    assert len(seen) == 10 and len(conns) == 4
    loop.call_soon_threadsafe(server.close)
    port, loop, server = start(b"503")
    with pytest.raises(RuntimeError, match="503"):
        load(f"http://127.0.0.1:{port}", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 2, 4)
    loop.call_soon_threadsafe(server.close)


def test_use_champions_says_to_run_repro_in_a_fresh_clone_and_serves_the_packaged_tags(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="run `make repro` first"):
        use_champions(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "serving.json").write_text(json.dumps({t: {"tag": f"faces-{t}:abc"}
                                                                  for t in ("gender", "rating")}))
    monkeypatch.delenv("FACES_GENDER_MODEL", raising=False)
    monkeypatch.setenv("FACES_RATING_MODEL", "faces-rating:mine")     # the env's choice wins
    use_champions(tmp_path)
    assert os.environ["FACES_GENDER_MODEL"] == "faces-gender:abc"
    assert os.environ["FACES_RATING_MODEL"] == "faces-rating:mine"
