"""bench/servers.py: a stopped server leaves nothing of its process group running."""
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from servers import stop  # noqa: E402


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
