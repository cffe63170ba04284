"""Single images get honest words: a scan report's banner says flagged, not
flagged (neutral, never green), cannot flag (grey: too few null images to
reach the rate) or not calibrated (grey), every result carries a warning when
no image can be flagged, and no p-value is ever printed as 0."""

from __future__ import annotations

import re
import shutil

import pytest

from mimicry import StyleIndex
from mimicry.flagging import flag_threshold, flaggable_size
from mimicry.report import model_report, scan_report
from mimicry.results import ScanResult, p_text, percent_text

#: A p-value or rate printed as zero ("0", "0.000", "0.00e+00").
ZERO = re.compile(r"(?:p-value|fpr|p =|image p) 0(?:\.0*)?(?:e[+-]?0+)?(?![\d.])")
BANNER = re.compile(r'<p class="banner ([a-z-]+)" data-verdict="([a-z-]+)">(.*?)</p>', re.S)


def banners(html: str) -> list[tuple[str, str, str]]:
    """(colour class, verdict, words without markup) of each banner in a report."""
    return [(cls, kind, " ".join(re.sub(r"<[^>]+>", "", text).split())) for cls, kind, text in BANNER.findall(html)]


def tiny_background(demo, tmp_path, n: int = 10):
    _, _, out = demo
    folder = tmp_path / "tiny-background"
    folder.mkdir()
    for p in sorted((out / "background").rglob("*.png"))[:n]:
        shutil.copy2(p, folder / p.name)
    return folder


def test_flagged_and_not_flagged_banners(demo, default_embedder):
    res, _, out = demo
    target = res.fine_tuned_artist
    with StyleIndex.open(out / "index", embedder=default_embedder) as ix:
        results = ix.scan([out / "imitations" / f"imitation-of-{target}-0.png", out / "unrelated" / "photo-00.png"])
        html = scan_report(results, ix.info(), "mimicry scan")
    flagged, clear = results
    assert flagged.artist == target and clear.artist is None and clear.promise["can_flag"]
    best = clear.matches[0]
    (cls1, kind1, words1), (cls2, kind2, words2) = banners(html)
    assert (cls1, kind1) == ("flagged", "flagged") and words1.startswith(f"Flagged as {target} at a 1.0% false")
    assert (cls2, kind2) == ("neutral", "not-flagged")
    assert words2.startswith(f"Not flagged at 1.0%. Nearest: {best.artist} (similarity {best.score:.3f}, "
                             f"image p-value {p_text(clear.image_p_value, 120)})")
    assert "No known artist" not in html and 'class="banner clear"' not in html
    assert not any("flag" in w for r in results for w in r.warnings)  # it can flag: nothing to warn of


def test_a_background_too_small_to_flag_gets_a_grey_banner_not_a_green_one(calibrated_copy, demo, default_embedder,
                                                                           tmp_path):
    """A 10-image background cannot reach 1% (that needs 99): an obvious
    imitation is not flagged, and its banner says why instead of clearing it."""
    res, _, out = demo
    image = out / "imitations" / f"imitation-of-{res.fine_tuned_artist}-0.png"
    with StyleIndex.open(calibrated_copy, embedder=default_embedder) as ix:
        cal = ix.calibrate(background=[tiny_background(demo, tmp_path)])
        assert cal.n_null == 10 and not cal.can_flag
        (tmp_path / "unreadable.png").write_bytes(b"nope")
        results = ix.scan([image, out / "unrelated" / "photo-00.png", tmp_path / "unreadable.png"])
        html = scan_report(results, ix.info(), "mimicry scan")
    words = "Cannot flag: 10 background images, needs at least 99"
    assert [b[:2] for b in banners(html)] == [("grey", "cannot-flag"), ("grey", "cannot-flag"), ("error", "error")]
    assert all(b[2].startswith(words) for b in banners(html)[:2])
    assert results[0].matches[0].artist == res.fine_tuned_artist and results[0].artist is None
    assert "No known artist" not in html and "Not flagged at" not in html
    for r in results:  # every result, the unreadable one too, says so (JSON, CLI and service carry it)
        assert any(w.startswith("cannot flag: 10 background images, needs at least 99 to flag at 1.0%")
                   for w in r.to_dict()["warnings"]), r.image


def test_an_uncalibrated_index_gets_a_grey_banner_and_a_warning(tmp_path, portfolio, default_embedder):
    with StyleIndex.create(tmp_path / "ix", embedder=default_embedder) as ix:
        ix.add_folder(portfolio)
        results = ix.scan([portfolio])
        html = scan_report(results, ix.info(), "mimicry scan")
    assert len(results) == 9 and all(r.promise is None for r in results)
    shown = banners(html)
    assert len(shown) == 9 and all(b[:2] == ("grey", "uncalibrated") for b in shown)
    assert all(b[2].startswith("Not calibrated: similarities only") for b in shown)
    assert all(r.verdict_words() == ("uncalibrated", "Not calibrated: similarities only") for r in results)
    assert all(any(w.startswith("index not calibrated: similarities only") for w in r.to_dict()["warnings"])
               for r in results)
    assert "No known artist" not in html and 'class="banner clear"' not in html


def test_an_image_above_every_null_image_prints_the_floor_not_zero(demo, default_embedder):
    """An imitation scoring above all 120 background images has image p-value
    1/121: printed as the bound it is, in the report and the CLI's text."""
    from mimicry.faces.text import scan_result

    res, _, out = demo
    with StyleIndex.open(out / "index", embedder=default_embedder) as ix:
        results = ix.scan([out / "imitations"])
        html = scan_report(results, ix.info(), "mimicry scan")
    floor = [r for r in results if r.image_p_value == pytest.approx(1 / 121)]
    assert floor and floor[0].artist
    assert "image p-value &lt; 0.0083 (1/121)" in html
    assert f"FLAGGED: imitates {floor[0].artist} (image p-value < 0.0083 (1/121))" in scan_result(floor[0])[0]
    text = "\n".join(line for r in results for line in scan_result(r))
    assert text.count("image p-value") == len(results) <= html.count("image p-value")
    assert not ZERO.search(text) and not ZERO.search(html)


def test_model_report_prints_no_zero_p_value(demo, default_embedder):
    """The model report formats p-values with the same helper: a sample at the
    floor is ``< 0.0083 (1/121)``, a model p-value that underflowed ``< 1e-300``."""
    from dataclasses import replace

    res, _, _ = demo
    verdict = res.fine_tune
    top = replace(verdict.findings[0], p_value=0.0, p_tiers={"imitates": 0.0, "review": 0.0})
    html = model_report(replace(verdict, findings=[top] + verdict.findings[1:]), None, "x")
    assert "p = &lt; 1e-300" in html and not ZERO.search(html) and "0.00e+00" not in html
    if any(p.p_value == pytest.approx(1 / 121) for p in top.pairs):
        assert "image p &lt; 0.0083 (1/121)" in html


@pytest.mark.parametrize("p, n, text", [
    (0.0, None, "< 1e-300"), (1e-300, None, "1e-300"), (1 / 2272, 2271, "< 0.00044 (1/2272)"),
    (1 / 101, 100, "< 0.0099 (1/101)"), (0.0004, None, "0.0004"), (0.0004, 2271, "0.0004"), (0.5, None, "0.5"),
    (0.5, 100, "0.5"), (3.14e-7, None, "3.1e-07"), (0.0044, None, "0.0044"), (1.0, 100, "1"), (None, None, "n/a"),
    (float("nan"), None, "n/a"), (5e-324, None, "4.9e-324"),
])
def test_p_text_never_prints_zero(p, n, text):
    assert p_text(p, n) == text


def test_percent_text_never_prints_zero_for_a_rate():
    assert [percent_text(r) for r in (0.01, 0.05, 0.001, 0.0005, 0.0001, 0.2)] == \
        ["1.0%", "5.0%", "0.1%", "0.05%", "0.01%", "20.0%"]


@pytest.mark.parametrize("rate", [0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.01, 0.007, 0.001, 1e-4])
def test_flaggable_size_is_where_the_threshold_becomes_finite(rate):
    import numpy as np

    m = flaggable_size(rate)
    assert np.isfinite(flag_threshold(np.zeros(m), rate)) and not np.isfinite(flag_threshold(np.zeros(m - 1), rate))
    assert flaggable_size(0.01) == 99 and flaggable_size(0.05) == 19


def test_verdict_words_for_each_state():
    from mimicry.results import Evidence, Match

    m = Match("ada", 0.9314, [Evidence(1, "ada", "0" * 64, 0.9314)])
    promise = {"fpr": 0.01, "negatives": 10, "source": "background", "certified": False, "needed": 300,
               "can_flag": False}
    assert ScanResult("x.png", [m], promise=promise, image_p_value=1 / 11).verdict_words() == \
        ("cannot-flag", "Cannot flag: 10 background images, needs at least 99")
    promise = promise | {"negatives": 2271, "can_flag": True}
    assert ScanResult("x.png", [m], promise=promise, image_p_value=0.25).verdict_words() == \
        ("not-flagged", "Not flagged at 1.0%. Nearest: ada (similarity 0.931, image p-value 0.25)")
    assert ScanResult("x.png", [m], artist="ada", promise=promise, image_p_value=1 / 2272).verdict_words() == \
        ("flagged", "FLAGGED: imitates ada (image p-value < 0.00044 (1/2272))")
    assert ScanResult("x.png", [m]).verdict_words() == ("uncalibrated", "Not calibrated: similarities only")
    assert ScanResult("x.png", [], "unreadable").verdict_words()[0] == "error"
