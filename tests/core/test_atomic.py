"""pipeline/core/atomic.py: a write is all or nothing, and leaves no temp files behind."""
import pytest

from pipeline.core.atomic import atomic_path, sha256_file, write_text


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    target = tmp_path / "out.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_strays_of_a_killed_write_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.pt"
    (tmp_path / ".model.pt.tmp-abc123").write_bytes(b"half")        # what kill -9 mid-write leaves
    write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_sha256_file(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    assert sha256_file(tmp_path / "a") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
