"""The evaluation harness: metrics on a labelled set, through the scan's own functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import write_manifest
from mimicry.evaluate import evaluate
from mimicry.metrics import tpr_at_fpr
from mimicry.synthetic import STYLES, paint, scene


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, demo_set):
    """The demo's images as a labelled set (4 artists x 6 works, 3 imitations
    each, 6 photos), its manifest (paths relative to it, one missing file), and
    a vector cache the tests share."""
    root = tmp_path_factory.mktemp("labelled")
    data = demo_set
    manifest = write_manifest(root / "manifest.csv", data.portfolios, data.imitations, data.unrelated,
                              data.truth, relative_to=root, extra=("missing.png,negative,,",))
    return data, manifest, root / "cache"


def test_evaluate_on_a_written_manifest(tmp_path, default_embedder, labelled):
    """Four well-separated styles, imitations of each, photos as negatives: the
    harness must report perfect attribution and separation, with correct counts."""
    data, manifest, cache = labelled
    out = tmp_path / "eval"
    result = evaluate(manifest, embedder=default_embedder, out=out, unregistered=1, seed=0, sets=60,
                      cache=cache)
    m = result.to_dict()
    assert (m["n_genuine"], m["n_imitation"], m["n_skipped"]) == (18, 9, 1)
    assert m["n_negative"] == 6 + 6 + 3  # photos + the unregistered artist's works and imitations
    assert m["top1"] == 1.0 and m["top3"] == 1.0
    assert m["auc"] > 0.9 and 0 <= m["negatives_flagged"] <= 0.3
    assert 0.5 <= m["set_auc"] <= 1.0 and "auc_unregistered" in m
    assert m["imitation_sets_detected"] > 0.9 and m["negative_sets_flagged"] <= 0.05
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("top1", "top3", "auc", "tpr_at_1pct_fpr", "negatives_flagged", "set_auc",
                "imitation_sets_detected", "negative_sets_flagged", "n_genuine", "n_imitation", "n_negative", "n_skipped", "perturbations"):
        assert key in saved
    assert (out / "roc.png").stat().st_size > 1000


def test_perturbation_path_decodes_like_the_clean_scan(tmp_path, default_embedder):
    """The identity perturbation reproduces the clean vectors, so a perturbation's
    effect is the perturbation's alone."""
    from PIL import Image

    from mimicry.engines import Embedded
    from mimicry.engines.local import LocalEngine
    from mimicry.perturbations import embed_perturbed

    paths = []
    for i, style in enumerate(STYLES):
        p = tmp_path / f"{i}.jpg"
        paint(scene(i), style, i).resize((900, 700), Image.BICUBIC).save(p, quality=90)
        paths.append(p)
    clean = Embedded.gather(LocalEngine(default_embedder).embed(paths), default_embedder.dim)
    same = embed_perturbed(default_embedder, paths, lambda im: im)
    assert clean.keys == paths
    assert np.allclose(np.stack([same[p] for p in clean.keys]), clean.vectors, atol=1e-5)


def test_evaluate_measures_what_scan_gives(tmp_path, default_embedder, labelled):
    """The harness and the product agree: an index of the same genuine works,
    calibrated the same way, flags and ranks the same images the same way."""
    from mimicry import StyleIndex

    data, manifest, cache = labelled
    imitations = sorted(data.imitations.glob("*.png"))
    result = evaluate(manifest, embedder=default_embedder, fpr=0.2, sets=20, cache=cache)
    m = result.metrics
    imi, neg = result.scores["imitation"], result.scores["negative"]
    labels, stat = np.r_[np.ones(len(imi)), np.zeros(len(neg))], np.r_[imi, neg]
    assert m["tpr_at_fpr"] == tpr_at_fpr(labels, stat, 0.2)  # at the calibrated rate given
    assert m["tpr_at_1pct_fpr"] == tpr_at_fpr(labels, stat, 0.01)  # still at 1%, whatever the rate

    ix = StyleIndex.create(tmp_path / "ix", embedder=default_embedder)
    ix.add_folder(data.portfolios)
    ix.calibrate(fpr=0.2)
    imi = ix.scan(imitations)
    neg = ix.scan([data.unrelated])
    assert m["top1"] == np.mean([r.matches[0].artist == data.truth[r.image.rsplit("/", 1)[-1]] for r in imi])
    assert m["negatives_flagged"] == np.mean([r.artist is not None for r in neg])
    verdict = ix.scan_model(imitations[:3])  # one artist's imitations, as a model's samples
    assert verdict.findings[0].artist == data.truth[imitations[0].name]


def test_evaluate_with_a_background_reports_image_level_rates(tmp_path, default_embedder, labelled, demo):
    """A background in artists' folders is split in half by folder: one half
    calibrates, the other measures background_flagged; sets of 8, 16 and 32."""
    import shutil

    data, manifest, _ = labelled
    photos = sorted((demo[2] / "background").rglob("*.png"))  # the demo's 120 photo-like images
    background = tmp_path / "background"
    for g in range(10):
        (background / f"unregistered-{g:02d}").mkdir(parents=True)
        for i in range(10):
            shutil.copy(photos[10 * g + i], background / f"unregistered-{g:02d}" / f"{i}.png")
    result = evaluate(manifest, embedder=default_embedder, background=[background], fpr=0.15,
                      cache=tmp_path / "cache", sets=60)
    m = result.metrics
    assert result.promise == {"fpr": 0.15, "negatives": 50, "source": "background", "certified": True,
                              "needed": 20, "can_flag": True}  # half of 10 folders x 10 images
    assert 0 <= m["background_flagged"] <= 0.3 and m["imitations_flagged"] >= 0.75
    assert m["negatives_flagged"] <= 0.34
    for key in ("set_auc_16", "imitation_sets_detected_16", "negative_sets_flagged_32"):
        assert 0 <= m[key] <= 1
    assert m["imitation_sets_detected_32"] >= m["imitation_sets_detected"] - 0.05  # more samples, more power
    # A rerun embeds nothing new: every vector comes from the cache.
    import mimicry.vector_cache as vc

    calls = []

    class Counting(vc.LocalEngine):
        def embed(self, sources, **kw):
            calls.append(len(sources))
            return super().embed(sources, **kw)

    real, vc.LocalEngine = vc.LocalEngine, Counting
    try:
        again = evaluate(manifest, embedder=default_embedder, background=[background], fpr=0.15,
                         cache=tmp_path / "cache", sets=60)
    finally:
        vc.LocalEngine = real
    assert calls and set(calls) == {0} and again.metrics == m
    # A separate held-out folder: the whole background calibrates.
    held = evaluate(manifest, embedder=default_embedder, background=[background], fpr=0.15,
                    heldout_background=[data.unrelated], cache=tmp_path / "cache", sets=20)
    assert held.promise["negatives"] == 100 and 0 <= held.metrics["background_flagged"] <= 0.5


def test_a_detector_that_never_flags_scores_zero():
    from mimicry.calibration import calibrate
    from mimicry.flagging import Judged
    from mimicry.metrics import scan_metrics

    rng = np.random.default_rng(0)
    works = rng.normal(size=(6, 4))
    cal = calibrate(works / np.linalg.norm(works, axis=1, keepdims=True), ["a", "a", "a", "b", "b", "b"])
    raw = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.4]])
    never = Judged(raw, raw, raw.max(axis=1), raw.argmax(axis=1), np.ones(3), np.zeros(3, dtype=bool))
    m, _ = scan_metrics(never, cal, np.array(["imitation", "imitation", "negative"]), np.array(["a", "b", ""]),
                        0, held=never, alpha=0.001, fpr=0.01)
    assert m["imitations_flagged"] == 0 and m["negatives_flagged"] == 0 and m["background_flagged"] == 0
    assert m["top1"] == 1.0


def synthetic_scan(rng, n_imi: int = 40, n_neg: int = 60):
    """A calibration of two artists whose null images are standard normal, and
    judged images: imitations of ``a`` (statistic about 1) and negatives (about 0)."""
    from dataclasses import replace

    from mimicry.calibration import calibrate
    from mimicry.flagging import Judged, flag_threshold, flagged, image_p_values

    works = rng.normal(size=(6, 4))
    cal = calibrate(works / np.linalg.norm(works, axis=1, keepdims=True), ["a", "a", "a", "b", "b", "b"])
    null = np.sort(rng.normal(size=400)).astype(np.float32)
    cal = replace(cal, null=null, flag_threshold=flag_threshold(null, cal.target_rate))
    stat = np.r_[rng.normal(1.0, 1.0, n_imi), rng.normal(0.0, 1.0, n_neg)]
    best = np.r_[np.zeros(n_imi, dtype=int), rng.integers(2, size=n_neg)]
    raw = np.zeros((len(stat), 2))
    raw[np.arange(len(stat)), best] = stat
    j = Judged(raw, raw, stat, best, image_p_values(cal, stat), flagged(cal, stat))
    roles = np.array(["imitation"] * n_imi + ["negative"] * n_neg)
    truth = np.array(["a"] * n_imi + [""] * n_neg)
    return cal, j, roles, truth


def test_tpr_at_fpr_is_measured_at_the_rate_given():
    from mimicry.metrics import scan_metrics

    cal, j, roles, truth = synthetic_scan(np.random.default_rng(1))
    imi = roles == "imitation"
    labels = np.r_[np.ones(imi.sum()), np.zeros((~imi).sum())]
    stat = np.r_[j.statistic[imi], j.statistic[~imi]]
    for fpr in (0.05, 0.2):
        m, _ = scan_metrics(j, cal, roles, truth, 0, None, sets=5, alpha=0.001, fpr=fpr)
        assert m["tpr_at_fpr"] == tpr_at_fpr(labels, stat, fpr)
        assert m["tpr_at_1pct_fpr"] == tpr_at_fpr(labels, stat, 0.01)
    assert tpr_at_fpr(labels, stat, 0.2) > tpr_at_fpr(labels, stat, 0.05) > tpr_at_fpr(labels, stat, 0.01)


def test_set_verdicts_are_taken_at_alpha():
    """Model verdicts on sets follow the significance level they are given."""
    from mimicry.metrics import scan_metrics

    cal, j, roles, truth = synthetic_scan(np.random.default_rng(2))
    strict, _ = scan_metrics(j, cal, roles, truth, 0, None, sets=100, alpha=0.001, fpr=0.01)
    loose, _ = scan_metrics(j, cal, roles, truth, 0, None, sets=100, alpha=0.5, fpr=0.01)
    assert loose["negative_sets_flagged"] > strict["negative_sets_flagged"]
    assert loose["imitation_sets_detected"] > strict["imitation_sets_detected"]
    assert loose["set_auc"] == strict["set_auc"]  # the statistic itself does not depend on alpha


def test_evaluate_takes_alpha_from_the_settings(monkeypatch, default_embedder, labelled):
    """``MIMICRY_ALPHA`` and ``MIMICRY_REVIEW_ALPHA`` set the levels of the set
    verdicts, as they do for ``scan-model``; an explicit ``alpha`` wins; the
    levels used are reported."""
    import mimicry.metrics as metrics

    _, manifest, cache = labelled
    used: list[tuple[float, float]] = []
    real = metrics.judge_set
    monkeypatch.setattr(metrics, "judge_set", lambda j, cal, a, r: used.append((a, r)) or real(j, cal, a, r))
    default = evaluate(manifest, embedder=default_embedder, sets=5, cache=cache)
    assert default.alpha == 0.001 and default.review_alpha == 0.05 and set(used) == {(0.001, 0.05)}
    used.clear()
    monkeypatch.setenv("MIMICRY_ALPHA", "0.5")
    monkeypatch.setenv("MIMICRY_REVIEW_ALPHA", "0.6")
    loose = evaluate(manifest, embedder=default_embedder, sets=5, cache=cache)
    assert loose.alpha == 0.5 and loose.to_dict()["alpha"] == 0.5 and set(used) == {(0.5, 0.6)}
    assert loose.to_dict()["review_alpha"] == 0.6
    used.clear()
    assert evaluate(manifest, embedder=default_embedder, sets=5, cache=cache, alpha=0.01).alpha == 0.01
    assert set(used) == {(0.01, 0.6)}


def test_evaluate_reports_models_and_held_out_makers(tmp_path, default_embedder, demo, labelled):
    """A second manifest with a ``model`` column: each model's sets at 8, 16
    and 32 samples (a size past its pool skipped and said), judged as
    ``scan-model`` judges them; a background of maker folders (symlinked files,
    as a hub might lay them out): each held-out maker is one set."""
    res, _, out = demo
    _, manifest, cache = labelled
    rows = ["path,role,artist,model"]
    rows += [f"{f},imitation,{res.fine_tuned_artist},tuned" for f in sorted((out / "samples-fine-tune").glob("*"))]
    rows += [f"{f},negative,,unrelated" for f in sorted((out / "samples-unrelated").glob("*"))]
    models = tmp_path / "models.csv"
    models.write_text("\n".join(rows) + "\n")
    bg = tmp_path / "bg"
    for i, f in enumerate(sorted((out / "background").rglob("*.png"))):
        (bg / f"maker-{i // 4:02d}").mkdir(parents=True, exist_ok=True)
        (bg / f"maker-{i // 4:02d}" / f.name).symlink_to(f)
    e = evaluate([manifest, models], embedder=default_embedder, sets=20, cache=cache, background=[bg],
                 out=tmp_path / "out")
    d = json.loads((tmp_path / "out" / "metrics.json").read_text())
    tuned, unrelated = d["models"]["tuned"], d["models"]["unrelated"]
    assert tuned["pool"] == 12 and tuned["artist"] == res.fine_tuned_artist and tuned["skipped_sizes"] == [16, 32]
    assert tuned["8"]["sets"] == 20 and tuned["8"]["imitates"] >= 0.9 and "16" not in tuned
    assert tuned["8"]["imitates_or_review"] >= tuned["8"]["imitates"]
    assert unrelated["artist"] is None and unrelated["8"]["imitates"] == 0.0
    assert d["makers"]["sets"] == 15 and 0 <= d["makers"]["review"] <= 1  # 30 makers of 4: 15 held out
    assert e.metrics["imitation_sets_either_tier"] >= e.metrics["imitation_sets_detected"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "held-out makers" in html and "<th scope=\"row\">tuned</th>" in html and "too few samples" in html
