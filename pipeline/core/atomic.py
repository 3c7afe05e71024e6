"""Crash-safe file writes (and file hashes): a file is either the old one or the complete new one, never half of either.

    with atomic_path(out / "model.pt") as tmp:     # write anything to tmp (torch.save, np.save, ...)
        torch.save(bundle, tmp)
    write_text(out / "run.json", text)              # the same for text

Each write goes to a temporary name in the same folder, is fsync'ed, and is renamed over the target
(`os.replace` is atomic on POSIX within one file system); the folder is fsync'ed too so the rename
survives a power cut. A process killed mid-write (kill -9, full disk) leaves at most a stray
`.<name>.tmp-*` file, which the next write of that target removes.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_strays(target: Path) -> None:
    """Temp files of earlier writes of `target` that were killed before their rename."""
    for stray in target.parent.glob(f".{target.name}.tmp-*"):
        stray.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yields a temporary path next to `target`; on a clean exit it is fsync'ed and renamed to
    `target`; on an exception it is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_strays(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:          # whoever wrote tmp may not have synced it
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)                 # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    write_bytes(target, text.encode())


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
