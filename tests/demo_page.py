"""The demo page in Debian's headless Chromium through Playwright (never a downloaded browser), for the
live-server tests (tests/service/test_service_live.py, test_service_faces.py)."""
import shutil

import pytest


def launch_chromium(p):
    """Debian's headless chromium through a playwright handle `p`; skips the test where it is missing."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    return p.chromium.launch(executable_path=exe, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])


def open_demo(p, url: str):
    """The demo page of the server at `url` in headless chromium -> (browser, page)."""
    browser = launch_chromium(p)
    page = browser.new_page()
    page.goto(url + "/")
    return browser, page


def submit(page, photo, wait_for: str) -> None:
    """Chooses `photo` (a path, or playwright's {name, mimeType, buffer}) on the demo page, presses
    Predict and waits for `wait_for` (a CSS selector)."""
    page.set_input_files("#file", photo if isinstance(photo, dict) else str(photo))
    page.click("#go")
    page.wait_for_selector(wait_for, timeout=30_000)
