"""HTML reports rendered from real results (no browser: see test_browser.py):
what they say, that they stand alone, stay small, hide server paths, and that
the flag line drawn on the score bar is the rule that decided the flag."""

from __future__ import annotations

import re


from mimicry import StyleIndex
from mimicry.report import model_report, scan_report, write_report
from reports import LONG, big_verdict, demo_model, demo_scan, many_samples

IMG = re.compile(r"<img [^>]*src=\"([^\"]+)\"")


def test_flag_line_is_the_rule_that_flags(demo, default_embedder):
    """On every scanned demo image the nearest artist's score passes its flag
    line exactly when the image is flagged (the line is the image-level
    threshold put back on the raw scale)."""
    res, _, out = demo
    with StyleIndex.open(out / "index", embedder=default_embedder) as ix:
        results = ix.scan([out / "imitations", out / "unrelated", out / "samples-unrelated"])
    flagged = [r.artist is not None for r in results]
    assert any(flagged) and not all(flagged)
    for r in results:
        top = r.matches[0]
        assert top.flag_at is not None
        assert (top.score > top.flag_at) == (r.artist is not None) == bool(top.flagged), r.image


def test_scan_report_shows_verdicts_evidence_and_stands_alone(demo, default_embedder):
    html, results = demo_scan(demo, default_embedder)
    res, _, out = demo
    target = res.fine_tuned_artist
    assert html.count('data-verdict="flagged"') == 2 and html.count('data-verdict="not-flagged"') == 1
    assert f"Flagged as <strong>{target}</strong> at a 1.0% false-positive rate" in html
    srcs = IMG.findall(html)
    # Each image, and the nearest artist's evidence works beside it.
    assert len(srcs) == 3 + sum(len(r.matches[0].evidence) for r in results)
    assert all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert not re.search(r"(src|href)=\"(http|//)", html) and "<script" not in html
    assert "efficientnet-lite0" in html and "24 works by 4 artists" in html
    assert "on 120 background images" in html and "mimicry scan imitations photo-00.png" in html
    top = results[0].matches[0]
    assert f"flag line {top.flag_at:.3f}" in html and f"similarity {top.score:.3f}" in html


def test_model_report_states_the_verdict_and_pairs_each_sample(demo, default_embedder):
    html, verdict = demo_model(demo, default_embedder)
    f = verdict.findings[0]
    assert verdict.artists == [f.artist]
    assert f"Imitates <strong>{f.artist}</strong>" in html
    assert "than models of styles nobody registered would be" in html  # the plain sentence
    assert "sets of works by 40 makers nobody registered" in html and "below the imitates tier" in html
    assert "What each tier rests on" in html and "cannot fire here" not in html
    assert html.count('class="sample"') + html.count('class="sample none"') == verdict.n_samples
    assert len(f.pairs) == f.supporting
    pairs = sum(len(g.pairs) for g in verdict.findings)
    assert html.count('<li class="pair">') == pairs
    assert len(IMG.findall(html)) == verdict.n_samples + 2 * pairs


def test_unrelated_model_and_escaping(demo, default_embedder, tmp_path):
    """A verdict of no artist says so; names are escaped, never markup."""
    res, _, out = demo
    with StyleIndex.open(out / "index", embedder=default_embedder) as ix:
        verdict = ix.scan_model([out / "samples-unrelated"])
    html = model_report(verdict, None, 'mimicry scan-model "<script>alert(1)</script>"')
    assert verdict.artists == verdict.review == []
    assert 'data-verdict="not-flagged"' in html and "Not flagged at either tier: not cleared" in html
    assert 'class="banner clear"' not in html and "That is not a clearance" in html
    assert f"samples nearest each artist: {next(iter(verdict.nearest))} " in html
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_two_hundred_samples_stay_a_few_megabytes(demo, tmp_path):
    _, _, out = demo
    samples = many_samples(tmp_path / "samples")
    works = sorted((out / "portfolios").rglob("*.png"))
    html = model_report(big_verdict(samples, works), None, "x")
    size = len(html.encode())
    assert 200 * 1024 < size < 4 * 1024 * 1024, size  # thumbnails really embedded, and small
    assert html.count(LONG) >= 2


def test_service_names_no_server_path(demo, default_embedder):
    """``paths=False`` (the service) names works by id: no path of the index's files."""
    res, _, out = demo
    with StyleIndex.open(out / "index", embedder=default_embedder) as ix:
        results = ix.scan([out / "unrelated" / "photo-01.png"])
        html = scan_report(results, ix.info(), "POST /v1/scan", paths=False)
    assert str(out) not in html and "work-0" not in html and "work #" in html


def test_write_report_is_atomic_and_readable(tmp_path):
    path = write_report("<p>one</p>", tmp_path / "sub" / "r.html")
    assert path.read_text() == "<p>one</p>" and (path.stat().st_mode & 0o044) == 0o044
    write_report("<p>two</p>", path)
    assert path.read_text() == "<p>two</p>" and [p.name for p in path.parent.iterdir()] == ["r.html"]


def test_write_report_never_touches_the_process_umask(tmp_path, monkeypatch):
    """The umask is process-wide: setting it even for a moment would give a file
    another thread creates meanwhile the wrong mode. The mode goes on the file."""
    import os

    calls = []
    monkeypatch.setattr(os, "umask", lambda *a: calls.append(a) or 0o022)
    path = write_report("<p>one</p>", tmp_path / "r.html")
    assert calls == [] and (path.stat().st_mode & 0o777) == 0o644


def test_evaluation_report(demo, default_embedder, tmp_path):
    """``evaluate --out`` writes report.html: every metric, both plots with the
    threshold, and the worst misses (each wrong verdict) beside nearest works."""
    from reports import demo_evaluation

    path, result = demo_evaluation(demo, default_embedder, tmp_path / "eval")
    html = path.read_text()
    for key, value, _ in result.table():
        assert f"<th scope=\"row\">{key}</th><td>{'n/a' if value != value else format(value, '.3f')}</td>" in html
    assert html.count('src="data:image/svg+xml;base64,') == 2
    assert f"flag threshold {result.threshold:.3f}" in html
    import base64

    svgs = [base64.b64decode(u).decode() for u in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html)]
    assert result.fpr_target == 0.2 and sum("20% false positives (calibrated)" in s for s in svgs) == 1
    assert not any("1% false positives" in s for s in svgs)  # the ROC is marked at the calibrated rate
    assert (path.parent / "roc.png").stat().st_size > 1000 and (path.parent / "metrics.json").exists()
    wrong = [m for m in result.misses]
    assert 0 < len(wrong) <= 10 and html.count('<li class="miss">') == len(wrong)
    for m in wrong:  # a miss is a wrong verdict, never a right one
        assert (m.role == "imitation" and m.flagged_as != m.truth) or (m.role == "negative" and m.flagged_as)


def test_a_review_verdict_is_amber_and_says_it_is_not_enough_to_act_on(demo, default_embedder):
    """A model at the review tier only: an amber banner naming the artist, the
    tier's p-value and what to do; never the action banner, never green."""
    from dataclasses import replace

    _, verdict = demo_model(demo, default_embedder)
    review = replace(verdict, artists=[], review=list(verdict.artists))
    html = model_report(review, None, "x")
    assert 'class="banner review" data-verdict="review"' in html
    assert f"Review for <strong>{verdict.artists[0]}</strong>" in html
    assert "send it to a person with the evidence below" in html and "Imitates <strong>" not in html
    assert 'class="banner clear"' not in html and "a person should compare the pairs below" in html
    assert "images or makers" in html  # the demo's 40 makers back the review tier


def test_score_bars_span_the_range_that_matters_and_the_legend_says_so(demo, default_embedder):
    """Bars start near the lowest score shown, not at 0: a flagged image's bar
    and a photo's differ by much more than a few percent of the width, and the
    flag line sits where its similarity is on that scale."""
    from mimicry.report.render import bar_scale

    html, results = demo_scan(demo, default_embedder)
    lo, hi = bar_scale(results)
    assert 0 < lo < min(m.score for r in results for m in r.matches) and hi <= 1
    assert f"Bars run from similarity {lo:.2f} at the left edge to {hi:.2f} at the right, not from 0" in html
    fills = [float(w) for w in re.findall(r'class="fill[^"]*" style="width: ([0-9.]+)%"', html)]
    flagged, photo = results[0].matches[0], results[2].matches[0]
    assert fills[0] - fills[len(results[0].matches)] > 20 or max(fills) - min(fills) > 30, fills
    assert abs(fills[0] - 100 * (flagged.score - lo) / (hi - lo)) < 0.11
    lines = [float(x) for x in re.findall(r'class="line" style="left: ([0-9.]+)%"', html)]
    assert abs(lines[-1] - 100 * (photo.flag_at - lo) / (hi - lo)) < 0.11


def test_evidence_opens_large_without_scripts(demo, default_embedder):
    html, results = demo_scan(demo, default_embedder)
    n = sum(len(r.matches[0].evidence) for r in results)
    assert html.count('<details class="zoom"><summary title="Enlarge"><img class="thumb"') == n
    assert "<script" not in html and "Click an evidence picture to enlarge it" in html


def test_a_long_command_names_a_few_files_and_counts_the_rest():
    from mimicry.report.render import _command_text

    files = " ".join(f"scans/picture-{i:03d}.png" for i in range(200))
    short = _command_text(f"mimicry scan {files} --report out.html")
    assert short == ("mimicry scan --report out.html 200 files: picture-000.png, picture-001.png, "
                     "picture-002.png, ... (+197)")
    assert _command_text("mimicry scan a.png b.png --report out.html") == "mimicry scan a.png b.png --report out.html"
    html = scan_report([], None, f"mimicry scan {files}")
    assert "picture-199.png" not in html and "200 files: picture-000.png" in html


def test_evaluation_report_has_the_index_header(demo, default_embedder, tmp_path):
    from reports import demo_evaluation

    path, result = demo_evaluation(demo, default_embedder, tmp_path / "eval")
    html = path.read_text()
    assert result.backbone and f"<dt>Backbone</dt><dd>{result.backbone}" in html
    assert f"{result.n_genuine} works by {result.n_artists} artists" in html and result.n_artists == 4
    assert "of images by nobody registered flagged, on " in html
    # The docs' screenshot is this report: it shows a promise that holds.
    assert result.metrics["background_flagged"] <= result.fpr_target
