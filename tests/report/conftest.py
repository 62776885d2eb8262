"""The headless browser the report tests share: Debian's Chromium driven by Playwright (one per session)."""
from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium; skipped where Chromium is missing, except in CI, where its absence fails."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run must apt-get install chromium before the tests")
        pytest.skip("Chromium is not installed (apt-get install chromium); the browser test runs in CI")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new",
                                                              "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()
