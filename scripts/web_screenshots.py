"""Screenshots of the web pages for the docs, made from the demo's own
generated images (never from an evaluation set), in headless Chromium: the
queue, a case (desktop and phone) and an artist's page, over a copy of the
demo's index with a flagged upload recorded in its history.

    python scripts/web_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "report")]

from browser import browser, full_screenshot  # noqa: E402
from helpers import served  # noqa: E402
from webhub import ADMIN, make_hub, page_facts  # noqa: E402


def shoot(base: str, token: str, path: str, png: Path, width: int, max_height: int) -> None:
    """Signs in with ``token``, opens ``path`` and saves the page (at most ``max_height`` tall)."""
    with browser(width) as driver:
        driver.get(f"{base}/")
        driver.find_element("id", "token").send_keys(token)
        driver.find_element("css selector", "form.signin button[type=submit]").click()
        from selenium.webdriver.support.ui import WebDriverWait

        # the sign-in's own redirect lands first, else it may replace the page asked for next
        WebDriverWait(driver, 10).until(lambda d: d.current_url.rstrip("/") != base)
        driver.get(f"{base}{path}")
        page_facts(driver, base)
        bottom = driver.execute_script("return document.querySelector('main').getBoundingClientRect().bottom")
        height = full_screenshot(driver, png, width, int(bottom) + 24, max_height)
    print(f"{png}  {width}x{height}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    from mimicry.backbones import load_embedder
    from mimicry.demo import run_demo
    from mimicry.faces.http import create_app
    from mimicry.settings import get_settings

    work = Path(tempfile.mkdtemp(prefix="mimicry-web-shots-"))
    embedder = load_embedder("default", "cpu")
    result = run_demo(work / "demo", echo=lambda _: None, embedder=embedder)
    folder = Path(shutil.copytree(work / "demo" / "index", work / "hub", ignore=shutil.ignore_patterns("lock")))
    hub = make_hub(folder, (result, [], work / "demo"), embedder, model=True)
    artist_token = hub.index.rotate_token(hub.flagged_artist)  # the imitated artist signs in
    args.out.mkdir(parents=True, exist_ok=True)
    with served(create_app(hub.index, replace(get_settings({}), admin_token=ADMIN))) as base:
        shoot(base, hub.moderator, "/cases", args.out / "web-cases.png", 1280, 900)
        shoot(base, hub.moderator, f"/cases/{hub.case}", args.out / "web-case.png", 1280, 1600)
        shoot(base, hub.moderator, f"/cases/{hub.case}", args.out / "web-case-phone.png", 390, 1500)
        shoot(base, artist_token, "/artist", args.out / "web-artist.png", 1280, 1300)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
