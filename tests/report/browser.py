"""Headless Chromium for report tests (Selenium with Debian's chromium and
chromium-driver). :func:`chromium_or_skip` fails the test when they are
missing, saying what is missing; ``MIMICRY_ALLOW_NO_BROWSER=1`` makes it skip
with that reason instead. A report test that could not run is not a pass.

Test-only variables: ``MIMICRY_CHROMIUM`` and ``MIMICRY_CHROMEDRIVER`` say where
the browser and its driver are; ``MIMICRY_ALLOW_NO_BROWSER=1`` allows skipping."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("MIMICRY_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("MIMICRY_CHROMEDRIVER", "/usr/bin/chromedriver")
ALLOW_NO_BROWSER = "MIMICRY_ALLOW_NO_BROWSER"


def missing_browser() -> list[str]:
    """The browser and driver paths that are not there (empty when both are)."""
    return [p for p in (CHROMIUM, DRIVER) if not (Path(p).exists() or shutil.which(p))]


def chromium_or_skip() -> None:
    """Returns when headless Chromium is there; otherwise fails the test, or skips
    it when ``MIMICRY_ALLOW_NO_BROWSER=1``, naming what is missing either way."""
    missing = missing_browser()
    if not missing:
        return
    reason = (f"headless Chromium not installed ({', '.join(missing)} missing): "
              f"`make test` installs Debian's chromium and chromium-driver when run as root")
    if os.environ.get(ALLOW_NO_BROWSER) == "1":
        pytest.skip(f"{reason} ({ALLOW_NO_BROWSER}=1)")
    pytest.fail(f"{reason}; set {ALLOW_NO_BROWSER}=1 to skip the browser tests instead", pytrace=False)


@contextmanager
def browser(width: int, height: int = 900) -> Iterator[object]:
    """A headless Chromium window ``width`` CSS pixels wide; network closed
    (the flags keep it from calling out, a report must not need to)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium_or_skip()
    profile = tempfile.mkdtemp(prefix="mimicry-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
                 "--force-device-scale-factor=1", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        # --window-size sets the outer window; make the viewport itself ``width`` wide.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1,
                                "mobile": width < 600})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def full_screenshot(driver, path: Path, width: int, height: int | None = None, max_height: int = 16000) -> int:
    """A PNG of the page at ``width``, the viewport grown to ``height`` (default:
    the page's) and at most ``max_height``; the height taken."""
    if height is None:
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    height = min(height, max_height)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    driver.save_screenshot(str(path))
    return height


PAGE_FACTS = """
const imgs = Array.from(document.images);
return {
  images: imgs.length,
  undecoded: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
  no_alt: imgs.filter(i => !i.alt).length,
  scroll_width: document.documentElement.scrollWidth,
  client_width: document.documentElement.clientWidth,
  verdicts: Array.from(document.querySelectorAll('[data-verdict]')).map(e => [e.dataset.verdict, e.innerText]),
  evidence: document.querySelectorAll('.evidence img, .pair img, .miss img').length,
  samples: document.querySelectorAll('.samples .sample').length,
  external: Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') || e.getAttribute('href'))
              .filter(u => !(u.startsWith('data:') || u.startsWith('#'))),
};
"""


def page_facts(driver, path: Path) -> dict:
    """Opens ``path`` from disk and reads what the tests check from the live page."""
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.fonts ? document.fonts.ready : null")
    # Images are data: URIs; wait until every one has decoded (or failed).
    driver.execute_async_script("""
      const done = arguments[arguments.length - 1];
      Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null))).then(() => done(null));
    """)
    return driver.execute_script(PAGE_FACTS)
