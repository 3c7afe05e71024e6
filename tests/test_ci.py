"""CI cannot pass by not running things: skips fail under FACES_NO_SKIP (collection included), and .ci/run
stops when a tool it needs cannot be installed."""
import re
import shutil
import subprocess
import sys

from conftest import ROOT, venv_env

SKIPPING = {
    "test_module_skip.py": 'import pytest\npytest.importorskip("no_such_module_here")\n\n\ndef test_never():\n    pass\n',
    "test_test_skip.py": 'import pytest\n\n\ndef test_skips():\n    pytest.skip("a tool is missing")\n',
}


def _pytest(folder, no_skip: bool) -> subprocess.CompletedProcess:
    env = {**venv_env(), "FACES_NO_SKIP": "1"} if no_skip else {k: v for k, v in venv_env().items() if k != "FACES_NO_SKIP"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=300)


def test_a_skip_at_collection_or_in_a_test_fails_under_faces_no_skip(tmp_path):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    for name, text in SKIPPING.items():
        (tmp_path / name).write_text(text)
    quiet = _pytest(tmp_path, no_skip=False)
    assert quiet.returncode == 0 and "2 skipped" in quiet.stdout, quiet.stdout[-2000:]
    strict = _pytest(tmp_path, no_skip=True)
    assert strict.returncode != 0, strict.stdout[-2000:]
    assert "skipped at collection" in strict.stdout and "CI is meant to run it" in strict.stdout


def test_ci_installs_what_its_steps_need_or_stops():
    text = (ROOT / ".ci" / "run").read_text()
    installs = [m.start() for m in re.finditer(r"apt-get install", text)]
    assert len(installs) >= 3                                        # chromium, docker.io + debootstrap, postgresql
    for start in installs:
        statement = text[start:text.index("\nfi", start)]
        assert re.search(r"\|\| \{ echo \"ci: [^\"]+\"; exit 1; \}", statement), statement
    assert "skipped" not in text.lower()
    assert "unset PYTEST_ARGS" in text and "export FACES_NO_SKIP=1" in text
    for step in ("make repro", "make container-test", "make compose-test", "make lint", "make test"):
        assert re.search(rf"^{step}\b", text, re.M), f".ci/run does not run {step} unconditionally"
