"""Resources of the end-to-end tests: a headless browser, and a folder for what a test leaves
to look at (screenshots). The tracking UI as `deeprig ui` serves it (`tracking_ui`) is in
tests/conftest.py: the integration tests use it too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO

# Debian's chromium (CI installs it with apt): Playwright drives it as it is, so nothing is
# downloaded at test time (`playwright install` is not needed).
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS_ENV = "DEEPRIG_TEST_ARTIFACTS"


@pytest.fixture
def chromium_page():
    """A page of headless Debian chromium driven by Playwright. Skips where chromium is not
    installed (CI installs it, so there it runs)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


@pytest.fixture
def test_artifacts() -> Path:
    """Where tests leave files to look at: $DEEPRIG_TEST_ARTIFACTS, else tests/e2e/artifacts/
    (git-ignored)."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or REPO / "tests" / "e2e" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_is_a_real_screenshot(path: Path, width: int) -> None:
    from PIL import Image

    assert path.stat().st_size > 20_000, f"{path}: {path.stat().st_size} bytes"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width == width and image.height >= 900, image.size
        # A blank or half-rendered page has a handful of colours; this one has text, a chart.
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 100, f"{path}: almost blank"
