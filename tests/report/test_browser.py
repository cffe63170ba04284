"""The three reports in headless Chromium, at a phone's and a desktop's width:
the live page shows the verdict, every image decodes, the evidence is all
there, nothing loads from the network, the page never scrolls sideways, and
the keyboard reaches the content first. Without Chromium these tests fail,
saying what is missing, unless ``MIMICRY_ALLOW_NO_BROWSER=1`` (then they skip
with that reason)."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import browser, chromium_or_skip, full_screenshot, page_facts
from reports import LONG, big_verdict, demo_evaluation, demo_model, demo_scan, many_samples

pytestmark = pytest.mark.slow
WIDTHS = (390, 1280)


@pytest.fixture(scope="session")
def chromium():
    """Fails (or skips, when allowed) before the demo is built, not after."""
    chromium_or_skip()


@pytest.fixture(scope="module")
def reports(chromium, demo, default_embedder, tmp_path_factory):
    """name -> (path, expected verdicts, expected evidence images, expected samples)."""
    from mimicry.report import model_report, write_report

    root = tmp_path_factory.mktemp("reports")
    scan_html, results = demo_scan(demo, default_embedder)
    model_html, verdict = demo_model(demo, default_embedder)
    eval_path, evaluation = demo_evaluation(demo, default_embedder, root / "eval")
    _, _, out = demo
    big = big_verdict(many_samples(root / "samples"), sorted((out / "portfolios").rglob("*.png")))
    return {
        "scan": (write_report(scan_html, root / "scan.html"),
                 [("flagged", f"Flagged as {results[0].artist}"), ("flagged", "Flagged as"), ("not-flagged", "Not flagged at 1.0%. Nearest: ")],
                 sum(len(r.matches[0].evidence) for r in results), 0),
        "model": (write_report(model_html, root / "model.html"),
                  [("flagged", f"Imitates {verdict.artists[0]}")], 2 * sum(len(f.pairs) for f in verdict.findings),
                  verdict.n_samples),
        "model-200": (write_report(model_report(big, None, "x"), root / "big.html"),
                      [("flagged", f"Imitates {LONG}")], 2 * 150, 200),
        "evaluation": (eval_path, [], 3 * len(evaluation.misses), 0),
    }


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["scan", "model", "model-200", "evaluation"])
def test_report_in_chromium(reports, name, width, tmp_path):
    path, verdicts, evidence, samples = reports[name]
    with browser(width) as driver:
        facts = page_facts(driver, path)
        assert facts["client_width"] == width
        assert facts["scroll_width"] <= facts["client_width"], "the page scrolls sideways"
        assert facts["images"] > 0 and facts["undecoded"] == [], facts["undecoded"]
        assert facts["no_alt"] == 0 and facts["external"] == []
        assert facts["evidence"] == evidence and facts["samples"] == samples
        shown = facts["verdicts"]
        assert len(shown) == len(verdicts)
        for (kind, text), (got_kind, got_text) in zip(verdicts, shown):
            assert got_kind == kind and got_text.startswith(text), (got_kind, got_text)
        # Keyboard: the first Tab lands on the skip link, which leads to the findings.
        from selenium.webdriver.common.keys import Keys

        driver.find_element("tag name", "body").send_keys(Keys.TAB)
        active = driver.execute_script("return [document.activeElement.className, "
                                       "document.activeElement.getAttribute('href')]")
        assert active == ["skip", "#main"]
        shot = tmp_path / f"{name}-{width}.png"
        full_screenshot(driver, shot, width)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


#: Each name's characters per rendered line (a Range's client rects are its line boxes).
NAME_LINES = """
return Array.from(document.querySelectorAll('.name, .filename, .artist, .supports, figcaption span, .evidence-text, .banner strong, dd'))
  .filter(e => e.innerText.trim().length >= 12)
  .map(e => { const r = document.createRange(); r.selectNodeContents(e);
              const lines = new Set(Array.from(r.getClientRects()).map(x => Math.round(x.top))).size || 1;
              return [e.innerText.trim(), lines, e.innerText.trim().length / lines]; });
"""


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["scan", "model", "model-200", "evaluation", "scan-long"])
def test_names_wrap_at_words_and_evidence_enlarges_on_a_click(reports, long_scan, name, width):
    """No name wraps a few characters per line; a click on an evidence picture
    shows it at least twice as large (no script), and the page still never
    scrolls sideways."""
    path = long_scan if name == "scan-long" else reports[name][0]
    with browser(width) as driver:
        facts = page_facts(driver, path)
        squeezed = [n for n in driver.execute_script(NAME_LINES) if n[2] < 8]
        assert squeezed == [], squeezed
        zooms = driver.find_elements("css selector", "details.zoom summary")
        if name in ("scan", "scan-long"):
            assert zooms and len(zooms) == facts["evidence"]
        if not zooms:
            return
        img = "return document.querySelector('details.zoom img').getBoundingClientRect().width"
        before = driver.execute_script(img)
        driver.execute_script("arguments[0].scrollIntoView()", zooms[0])
        zooms[0].click()
        assert driver.execute_script("return document.querySelector('details.zoom').open")
        after = driver.execute_script(img)
        assert after >= min(2 * before, width - 80), (before, after)
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width


@pytest.fixture(scope="module")
def long_scan(chromium, demo, default_embedder, tmp_path_factory):
    """A scan report of images with very long file names, against an index
    whose works have them too."""
    import shutil

    from mimicry import StyleIndex
    from mimicry.report import scan_report, write_report

    _, _, out = demo
    root = tmp_path_factory.mktemp("long")
    long = "a-scanned-picture-with-an-exceptionally-long-file-name-from-a-camera-roll-export"
    images = []
    for i, src in enumerate([out / "unrelated" / "photo-00.png", *sorted((out / "imitations").glob("*.png"))[:2]]):
        images.append(Path(shutil.copy(src, root / f"{long}-{i:02d}.png")))
    with StyleIndex.open(out / "index", embedder=default_embedder) as ix:
        html = scan_report(ix.scan(images), ix.info(), "mimicry scan " + " ".join(map(str, images)))
    return write_report(html, root / "scan-long.html")
