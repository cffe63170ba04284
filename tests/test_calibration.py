"""Calibrated flags, hubness, model-level verdicts, and the evaluation harness."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mimicry import StyleIndex
from mimicry.calibration import Calibration, calibrate
from mimicry.evaluate import evaluate
from mimicry.synthetic import STYLES, make_dataset, paint, photo_like, scene
from mimicry.verdict import artist_tests


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flagged_share_of_negatives_stays_near_target():
    """Synthetic vectors: 5 artists, 2000 background negatives for calibration,
    a fresh 4000 negatives from the same distribution to check."""
    rng = np.random.default_rng(0)
    dim = 32
    centres = unit(rng.normal(size=(5, dim)))
    works = unit(np.repeat(centres, 20, axis=0) + 0.15 * rng.normal(size=(100, dim)))
    artists = [f"a{i}" for i in range(5) for _ in range(20)]
    cal = calibrate(works, artists, background=unit(rng.normal(size=(2000, dim))), fpr=0.05)
    fresh = unit(rng.normal(size=(4000, dim)))
    from mimicry.scoring import artist_score_matrix

    raw = artist_score_matrix(fresh, works, artists, cal.artists)
    share = (raw > cal.threshold[None, :]).mean(axis=0)
    assert np.all(np.abs(share - 0.05) < 0.02), share
    # Imitations (near an artist's centre) pass that artist's threshold.
    imitations = unit(centres[2] + 0.15 * rng.normal(size=(50, dim)))
    raw = artist_score_matrix(imitations, works, artists, cal.artists)
    assert (raw[:, 2] > cal.threshold[2]).mean() > 0.9


def test_hub_artist_does_not_flag_everything():
    """One artist's works sit near the middle of everything; unrelated images
    (mixtures of styles) are nearer to that hub than to anyone. Per-artist
    thresholds and normalisation keep the hub from claiming them."""
    rng = np.random.default_rng(1)
    dim = 32
    centres = unit(rng.normal(size=(4, dim)))
    works = [unit(c + 0.1 * rng.normal(size=(15, dim))) for c in centres]
    hub = unit(centres.mean(axis=0) + 0.05 * rng.normal(size=(15, dim)))
    all_works = np.concatenate(works + [hub])
    labels = [f"a{i}" for i in range(4) for _ in range(15)] + ["hub"] * 15

    def mixtures(n):
        picks = np.stack([rng.choice(4, 3, replace=False) for _ in range(n)])
        return unit(centres[picks].mean(axis=1) + 0.1 * rng.normal(size=(n, dim)))

    cal = calibrate(all_works, labels, background=mixtures(1000), fpr=0.01)
    from mimicry.scoring import artist_score_matrix

    raw = artist_score_matrix(mixtures(1000), all_works, labels, cal.artists)
    hub_j = cal.artists.index("hub")
    assert (raw.argmax(axis=1) == hub_j).mean() > 0.5  # by raw cosine the hub wins most
    assert (raw[:, hub_j] > cal.threshold[hub_j]).mean() < 0.03  # calibrated: about 1%
    assert (raw > cal.threshold[None, :]).any(axis=1).mean() < 0.08


def one_artist_calibration(negatives: np.ndarray, fpr: float = 0.01) -> Calibration:
    neg = np.sort(negatives).astype(np.float32)
    thr = neg[len(neg) - 1 - int(np.floor(fpr * len(neg)))]
    return Calibration(["a"], np.array([neg.mean()]), np.array([neg.std()]), np.array([thr]),
                       [neg], fpr, 0, 0)


def test_model_level_test_is_valid_under_the_null():
    # Samples from the negatives' own distribution: p < alpha in at most about
    # alpha of the sets, at every set size the product accepts.
    rng = np.random.default_rng(0)
    cal = one_artist_calibration(rng.normal(size=400))
    for n in (8, 50, 200):
        p = np.array([artist_tests(rng.normal(size=(n, 1)), cal)[0].p_value for _ in range(2000)])
        assert (p < 0.05).mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 2000), n
        assert (p < 0.001).mean() <= 0.004, n


def test_model_level_test_counts_samples_just_short_of_the_flag():
    # Every sample sits between the 4% and 1.5% points of the negatives: none is
    # flagged, yet sixteen of them together are strong evidence.
    rng = np.random.default_rng(1)
    neg = rng.normal(size=400)
    cal = one_artist_calibration(neg)
    lo, hi = np.quantile(neg, [0.96, 0.985])
    samples = rng.uniform(lo, hi, size=(16, 1))
    assert not (samples > cal.threshold).any()
    t = artist_tests(samples, cal)[0]
    assert t.p_value < 1e-6 and t.level == 0.05 and len(t.hits) == 16


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, default_embedder):
    root = tmp_path_factory.mktemp("cal")
    data = make_dataset(root, works_per_artist=6, imitations_per_artist=10, unrelated=24, seed=2)
    ix = StyleIndex.create(root / "ix", embedder=default_embedder)
    ix.add_folder(data.portfolios)
    bg = root / "background"
    bg.mkdir()
    for i in range(40):
        photo_like(70_000 + i).save(bg / f"bg-{i}.png")
    ix.calibrate(background=[bg], fpr=0.05)
    return ix, data


def test_model_level_verdict(calibrated):
    ix, data = calibrated
    target = STYLES[3].name
    samples = sorted(data.imitations.glob(f"imitation-of-{target}-*.png"))
    verdict = ix.scan_model(samples)
    assert verdict.artists == [target]
    top = verdict.findings[0]
    assert top.artist == target and top.p_value < 1e-3 and top.flagged >= 6
    assert all(f"/{target}/" in w for w in top.nearest_works)
    unrelated = ix.scan_model([data.unrelated])
    assert unrelated.artists == [] and unrelated.n_samples == 24


def test_scan_reports_flags_and_goes_stale(calibrated, tmp_path):
    ix, data = calibrated
    target = STYLES[0].name
    r = ix.scan([data.imitations / f"imitation-of-{target}-0.png"])[0]
    assert r.artist == target and r.matches[0].flagged and r.matches[0].fpr <= 0.2
    photo = ix.scan([data.unrelated / "photo-00.png"])[0]
    assert photo.artist is None and not any(m.flagged for m in photo.matches)
    before = ix.calibration.generation
    extra = data.portfolios / target / "later.png"
    paint(scene(31337), STYLES[0], 31337).save(extra)
    ix.add_folder(data.portfolios)
    after = ix.calibration  # redone automatically for the changed portfolio
    assert after.generation != before and after.n_background == 40


def test_scan_exits_1_when_flagged(calibrated):
    ix, data = calibrated
    cmd = [sys.executable, "-m", "mimicry.cli", "scan", "--index", str(ix.folder), "--json", "-q"]
    flagged = subprocess.run(cmd + [str(data.imitations / f"imitation-of-{STYLES[1].name}-1.png")],
                             capture_output=True, text=True)
    assert flagged.returncode == 1, flagged.stderr
    assert json.loads(flagged.stdout)["artist"] == STYLES[1].name
    clean = subprocess.run(cmd + [str(data.unrelated / "photo-03.png")], capture_output=True, text=True)
    assert clean.returncode == 0 and json.loads(clean.stdout)["artist"] is None


def test_scan_model_cli_exits_1_on_an_imitating_model(calibrated, tmp_path):
    ix, data = calibrated
    target = STYLES[0].name
    samples = tmp_path / "samples"
    samples.mkdir()
    for f in sorted(data.imitations.glob(f"imitation-of-{target}-*.png"))[:8]:
        (samples / f.name).write_bytes(f.read_bytes())
    cmd = [sys.executable, "-m", "mimicry.cli", "scan-model", "--index", str(ix.folder), "--json", "-q"]
    hit = subprocess.run(cmd + [str(samples)], capture_output=True, text=True)
    assert hit.returncode == 1, hit.stderr
    verdict = json.loads(hit.stdout)
    assert verdict["artists"] == [target] and verdict["n_samples"] == 8
    top = verdict["findings"][0]
    assert top["artist"] == target and top["supporting"] == len(top["samples"]) >= 6
    assert top["p_value"] < 1e-3 and 0 < top["level"] <= 0.5 and top["nearest_works"]
    clean = subprocess.run(cmd + [str(data.unrelated)], capture_output=True, text=True)
    assert clean.returncode == 0 and json.loads(clean.stdout)["artists"] == []


def test_evaluate_on_a_written_manifest(tmp_path, default_embedder):
    """Two well-separated styles, imitations of both, photos as negatives: the
    harness must report perfect attribution and separation, with correct counts."""
    data = make_dataset(tmp_path, works_per_artist=5, imitations_per_artist=4, unrelated=8, seed=5)
    lines = ["path,role,artist,notes"]
    for f in sorted(data.portfolios.rglob("*.png")):
        lines.append(f"{f.relative_to(tmp_path)},genuine,{f.parent.name},")
    for f in sorted(data.imitations.glob("*.png")):
        lines.append(f"{f.relative_to(tmp_path)},imitation,{data.truth[f.name]},")
    for f in sorted(data.unrelated.glob("*.png")):
        lines.append(f"{f.relative_to(tmp_path)},negative,,")
    lines.append("missing.png,negative,,")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval"
    m = evaluate(manifest, embedder=default_embedder, out=out, unregistered=1, seed=0)
    assert (m["n_genuine"], m["n_imitation"], m["n_skipped"]) == (15, 12, 1)
    assert m["n_negative"] == 8 + 5 + 4  # photos + the unregistered artist's works and imitations
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

    from mimicry.embedding import embed_all
    from mimicry.evaluate import _embed_perturbed

    paths = []
    for i, style in enumerate(STYLES):
        p = tmp_path / f"{i}.jpg"
        paint(scene(i), style, i).resize((900, 700), Image.BICUBIC).save(p, quality=90)
        paths.append(p)
    ok, clean, _ = embed_all(default_embedder, paths)
    same = _embed_perturbed(default_embedder, paths, lambda im: im)
    assert np.allclose(np.stack([same[p] for p in ok]), clean, atol=1e-5)
