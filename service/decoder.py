"""Photo decoding in child processes that can be stopped: a CPU budget per photo, and a kill when the
client leaves.

A decode cannot be interrupted from another thread (Pillow's and libjpeg's loops hold no cancellation
points, and a PNG of empty chunks or a JPEG of fill bytes is walked in Pillow's Python header loop),
but a process can be killed. So every upload's header parse, decode, face step and resize
(`pipeline.core.preprocess.frame`, the one image path) runs in one of `n` long-lived children, each
started as `python -m service.decoder` (a clean interpreter: no torch, no server threads). The
parent's thread for that child waits for the answer and, every POLL_S, checks the child's CPU time:
- over the photo's CPU budget: the child is killed, the photo refused ('too costly to decode', 400);
- the request's client gone (its task cancelled): the child is killed at once if the decode has
  cost over GRACE_CPU_S, else GRACE_S later if it has not finished by then (an ordinary photo has,
  and respawning a child costs more than finishing it);
- no answer within `wall_s` (the machine is that overloaded): killed, 'decode timed out' (503).
A killed child is replaced by a fresh one; a child whose memory grew past `max_rss_mb` is replaced
too (read after every big or refused photo and every RSS_EVERY-th answer), so a bomb's buffers never
stay with the server.

Wire format, both ways: 4-byte big-endian length + pickle. Only the parent's own objects are pickled
(the photo travels as bytes inside the task), so nothing a client sends is unpickled.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.preprocess import Framed, ImageError
from service.handoff import Threads

POLL_S = 0.02
GRACE_S = 0.25           # a decode goes on this long after its client left, then its child is killed,
GRACE_CPU_S = 0.05       # ... or at once when it has already cost this much CPU
TRIM_PIXELS = 4_000_000
RSS_EVERY = 16           # a child's memory is read after every big photo and every 16th answer


class DecodeRefused(Exception):
    """The photo cost more than its budget (status 400) or the server was too slow (503)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Decoded:
    framed: Framed
    pixels: int             # the photo's width x height (the request's pixel budget)
    cpu_s: float            # CPU the child spent on it


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack(">I", len(data)))
    stream.write(data)
    stream.flush()


def _recv(stream):
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError
    (n,) = struct.unpack(">I", head)
    return pickle.loads(stream.read(n))


class _Child:
    def __init__(self, setup: dict):
        root = str(Path(__file__).resolve().parents[1])     # holds service/ and pipeline/, wherever we run
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "service.decoder"], stdin=subprocess.PIPE, cwd=root,
                                     stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path})
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        _send(self.stdin, setup)
        ready = _recv(self.stdout)            # imports done: the first photo pays no start-up
        if not (isinstance(ready, tuple) and ready[0] == "ready"):
            raise RuntimeError(f"decoder child failed to start: {ready!r}")
        self.cpu_mark = ready[1]                   # its CPU seconds when it last answered
        self.answers = 0

    def cpu_s(self) -> float:
        """The child's user + system CPU seconds so far (/proc: ~20 us)."""
        with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        for stream in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                stream.close()


class _Job:
    """One photo's stop flag, set from the event loop when its client left and read by its decode
    thread (a plain attribute: a threading.Event per photo cost more than the rest of the hand-over)."""

    __slots__ = ("stopped",)

    def __init__(self) -> None:
        self.stopped = False


class DecodePool:
    """`await pool.frame(data, budget_s)` -> Decoded; raises pipeline's ImageError or DecodeRefused.
    One thread per child (service/handoff.py) waits for the child's answers."""

    def __init__(self, n: int, setup: dict, wall_s: float = 10.0, max_rss_mb: float = 600.0, on_kill=None):
        self.setup, self.wall_s, self.max_rss_mb = setup, wall_s, max_rss_mb
        self.on_kill = on_kill or (lambda reason: None)   # reason: budget | client_gone | wall | memory | died
        self.idle: queue.Queue[_Child] = queue.Queue()
        for _ in range(n):
            self.idle.put(_Child(setup))
        self.threads = Threads(n, "decode")
        self.killed = 0                                   # children stopped (budget, hang-up, wall)

    async def frame(self, data: bytes, budget_s: float) -> Decoded:
        job = _Job()
        try:
            return await self.threads.run(self._run, data, budget_s, job)
        except asyncio.CancelledError:       # the client left: stop the decode, not just stop waiting
            job.stopped = True                 # (a photo still queued never starts)
            raise

    def _run(self, data: bytes, budget_s: float, stop: _Job) -> Decoded:
        if stop.stopped:                       # its client left while it queued
            raise DecodeRefused(499, "client gone")
        child = self.idle.get()
        try:
            t0, stopped_at = time.monotonic(), None
            _send(child.stdin, data)
            while not select.select([child.stdout], [], [], POLL_S)[0]:
                used = child.cpu_s() - child.cpu_mark     # /proc only for photos slower than a poll
                if stop.stopped and stopped_at is None:
                    stopped_at = time.monotonic()
                # a client gone mid-decode: an ordinary photo (a few ms) is let finish, since a new
                # child costs ~0.15 s of CPU to start and hang-ups must not buy that; a costly one
                # (past GRACE_CPU_S of CPU) is killed at once, any other GRACE_S after the client left
                gone = stopped_at is not None and (used > GRACE_CPU_S or time.monotonic() - stopped_at > GRACE_S)
                if gone or used > budget_s or time.monotonic() - t0 > self.wall_s:
                    reason = "client_gone" if gone else "budget" if used > budget_s else "wall"
                    child = self._replace(child, reason)
                    if gone:
                        raise DecodeRefused(499, "client gone")
                    if used > budget_s:
                        raise DecodeRefused(400, f"too costly to decode: over {budget_s:g} s of CPU")
                    raise DecodeRefused(503, "decode timed out: server busy")
            status, value, pixels, cpu_now = _recv(child.stdout)
            cpu, child.cpu_mark = cpu_now - child.cpu_mark, cpu_now
            child.answers += 1
            # memory grows with a photo's pixels: read after a big photo, a refused one (a bomb may
            # have allocated before it failed) and every RSS_EVERY-th answer (a /proc read per photo
            # was 3 % of a worker's event loop)
            checked = status == "error" or pixels > TRIM_PIXELS or child.answers % RSS_EVERY == 0
            if checked and _rss_mb(child.proc.pid) > self.max_rss_mb:
                child = self._replace(child, "memory")
            if status == "error":
                raise ImageError(*value)                  # the image path's reason and detail
            return Decoded(value, pixels, cpu)
        except (EOFError, OSError, BrokenPipeError):      # the child died (killed from outside, OOM)
            child = self._replace(child, "died")
            raise DecodeRefused(503, "decoder restarted: retry") from None
        finally:
            self.idle.put(child)

    def _replace(self, child: _Child, reason: str) -> _Child:
        self.killed += 1
        self.on_kill(reason)
        child.kill()
        return _Child(self.setup)

    def close(self) -> None:
        self.threads.close()
        while not self.idle.empty():
            self.idle.get().kill()


def give_memory_back() -> None:
    """glibc keeps freed buffers in its arenas; malloc_trim returns them to the system (no-op
    elsewhere). Used by the decoder child after a big photo and by the worker when idle."""
    if _TRIM is not None:
        _TRIM(0)


_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child() -> None:
    """The child's loop: setup once, then photo bytes in, ("ok", Framed | "error", (reason, detail),
    the photo's pixels, the child's CPU seconds so far) out."""
    from pipeline.core.face import FaceConfig
    from pipeline.core.preprocess import frame, open_image

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr                      # nothing but answers may reach the pipe
    setup = _recv(stdin)
    face = FaceConfig(**setup["face"]) if setup["face"] else None
    if face is not None:
        import cv2

        cv2.setNumThreads(setup.get("threads", 1))
    _send(stdout, ("ready", time.process_time()))
    while True:
        try:
            data = _recv(stdin)
        except EOFError:
            return
        w = h = 0
        try:
            img = open_image(data, setup["max_pixels"])
            w, h = img.size                    # the photo's own: a JPEG draft decode shrinks img.size
            _send(stdout, ("ok", frame(img, setup["size"], face), w * h, time.process_time()))
        except ImageError as e:
            _send(stdout, ("error", (e.reason, e.detail), 0, time.process_time()))
        except Exception as e:  # noqa: BLE001 - a decoder or detector failure is a bad photo, never a crash
            _send(stdout, ("error", ("corrupt image", type(e).__name__), 0, time.process_time()))
        del data
        if w * h > TRIM_PIXELS:            # after a big photo only: trimming after every one made
            give_memory_back()             # the next re-fault its buffers


if __name__ == "__main__":
    _child()
