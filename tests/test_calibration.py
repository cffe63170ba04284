"""Calibration: an image-level false-flag rate that holds on fresh negatives and
does not grow with the registry; CSLS applied identically in calibration and scan."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from helpers import unit
from mimicry import scoring
from mimicry.calibration import calibrate
from mimicry.errors import InputError
from mimicry.flagging import Calibration, certified_size, flagged, image_p_values, judge
from mimicry.scoring import artist_columns, artist_max


def registry(n_artists: int, rng, dim: int = 32, works: int = 4):
    centres = unit(rng.normal(size=(n_artists, dim)))
    vecs = unit(np.repeat(centres, works, axis=0) + 0.1 * rng.normal(size=(n_artists * works, dim)))
    return centres, vecs, [f"artist-{i:04d}" for i in range(n_artists) for _ in range(works)]


def unrelated(n: int, rng, dim: int = 32, per_artist: int = 10):
    """Images by nobody registered, in their own styles, ``per_artist`` by each
    of their artists (the groups)."""
    own = unit(rng.normal(size=(n // per_artist, dim)))
    return (unit(np.repeat(own, per_artist, axis=0) + 0.1 * rng.normal(size=(n, dim))),
            np.repeat(np.arange(n // per_artist), per_artist))


def artist_score_matrix(queries, works, labels, artists) -> np.ndarray:
    """Exact query x artist max similarity, columns in ``artists`` order."""
    return artist_max(queries, works, artist_columns(labels, artists))


def flag_rate(cal: Calibration, works, labels, queries, reference) -> float:
    raw = artist_score_matrix(queries, works, labels, cal.artists)
    return float(judge(raw, scoring.neighbourhood(queries, reference, cal.k), cal).flagged.mean())


@pytest.mark.parametrize("n_artists", [10, 100, 1000])
def test_image_level_rate_holds_and_does_not_grow_with_the_registry(n_artists):
    """Calibrated on 2,000 unrelated images at 5%, a fresh 4,000 from the same
    population are flagged at about 5%, for 10, 100 and 1,000 artists alike.
    (Two images per unrelated artist: the rate's spread is set by how many
    unrelated artists the background samples, so a real background needs many.)"""
    rng = np.random.default_rng(n_artists)
    _, works, labels = registry(n_artists, rng)
    bg, groups = unrelated(2000, rng, per_artist=2)
    cal = calibrate(works, labels, background=bg, background_groups=groups, target_rate=0.05)
    assert cal.certified and cal.n_null == 2000
    fresh, _ = unrelated(4000, rng, per_artist=2)
    rate = flag_rate(cal, works, labels, fresh, bg)
    assert abs(rate - 0.05) < 0.02, (n_artists, rate)


def test_imitations_are_flagged_as_their_artist():
    rng = np.random.default_rng(7)
    centres, works, labels = registry(50, rng)
    bg, groups = unrelated(1000, rng)
    cal = calibrate(works, labels, background=bg, background_groups=groups, target_rate=0.01)
    imitations = unit(centres[3] + 0.1 * rng.normal(size=(50, 32)))
    raw = artist_score_matrix(imitations, works, labels, cal.artists)
    j = judge(raw, scoring.neighbourhood(imitations, bg, cal.k), cal)
    assert (j.flagged & (j.best == 3)).mean() > 0.8


def test_hub_artist_does_not_claim_unrelated_images():
    """One artist's works sit near the middle of everything; unrelated images
    (mixtures of styles) are nearer to that hub than to anyone. The hubness
    correction and the image-level threshold keep the flag rate near target."""
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

    bg = mixtures(1000)
    cal = calibrate(all_works, labels, background=bg, target_rate=0.01)
    fresh = mixtures(1000)
    raw = artist_score_matrix(fresh, all_works, labels, cal.artists)
    assert (raw.argmax(axis=1) == cal.artists.index("hub")).mean() > 0.5  # by raw cosine the hub wins most
    assert flag_rate(cal, all_works, labels, fresh, bg) < 0.03


def test_calibration_scores_background_exactly_as_a_scan_would_with_its_group_left_out():
    rng = np.random.default_rng(2)
    _, works, labels = registry(20, rng)
    bg, groups = unrelated(300, rng)
    cal = calibrate(works, labels, background=bg, background_groups=groups, target_rate=0.05)
    raw = artist_score_matrix(bg, works, labels, cal.artists)
    r = scoring.neighbourhood(bg, bg, cal.k, groups, groups)  # a scan's r(q), own group left out
    assert np.allclose(np.sort(judge(raw, r, cal).statistic), cal.null, atol=1e-6)
    with_self = scoring.neighbourhood(bg, bg, cal.k)  # finding itself would lift r(q)...
    assert (with_self > r).all()  # ...and lower every statistic: the held-out rate would overshoot


def test_without_background_the_promise_rests_on_the_portfolio_and_is_not_certified():
    rng = np.random.default_rng(3)
    _, works, labels = registry(30, rng)
    cal = calibrate(works, labels, target_rate=0.01)
    assert cal.null_source == "portfolio" and cal.n_null == len(works) and not cal.certified
    assert np.all(cal.artist_r == 0)  # no reference population: no hubness correction
    assert cal.promise() == {"fpr": 0.01, "negatives": 120, "source": "portfolio", "certified": False,
                             "needed": 300, "can_flag": True}
    assert cal.k == 0  # no correction applied, none reported
    assert certified_size(0.01) == 300 and certified_size(0.05) == 60


def test_flag_threshold_keeps_the_conformal_bound():
    rng = np.random.default_rng(4)
    for n in (10, 18, 19, 99, 100, 299, 1000):
        _, works, labels = registry(5, rng)
        bg = unit(rng.normal(size=(n, 32)))
        cal = calibrate(works, labels, background=bg, target_rate=0.05)
        if n + 1 < 20:  # fewer than 1/A - 1 null images: no threshold keeps 5%, so none flags
            assert not cal.can_flag and not flagged(cal, np.array([np.inf])).any()
            continue
        above = int((cal.null > cal.flag_threshold).sum())
        assert cal.can_flag and (above + 1) / (n + 1) <= 0.05 + 1e-12, (n, above)


def test_p_values_are_the_share_of_negatives_at_least_as_high():
    rng = np.random.default_rng(5)
    _, works, labels = registry(2, rng)
    cal = calibrate(works, labels)
    neg = np.arange(1, 100, dtype=np.float32) / 100  # 0.01 .. 0.99, 99 negatives
    cal = replace(cal, artists=["a"], negatives=[neg], mu=np.zeros(1), sigma=np.ones(1), artist_r=np.zeros(1))
    scores = np.array([[0.995], [0.985], [0.5], [0.0]])
    # none above -> 1/100; one (0.99) above -> 2/100; 50 at or above 0.5 -> 51/100; all -> 1
    assert np.allclose([cal.p_value(0, s) for s in scores[:, 0]], [0.01, 0.02, 0.51, 1.0])
    null = np.arange(1, 100, dtype=np.float32) / 100
    cal = replace(cal, null=null)
    assert np.allclose(image_p_values(cal, np.array([0.995, 0.5])), [0.01, 0.51])


def test_rate_outside_zero_one_is_an_input_error():
    with pytest.raises(InputError, match="between 0 and 1"):
        calibrate(unit(np.eye(4)), ["a", "a", "b", "b"], target_rate=1.5)


def test_calibration_round_trips_through_plain_arrays():
    rng = np.random.default_rng(6)
    _, works, labels = registry(3, rng, works=10)
    cal = calibrate(works, labels, background=unit(rng.normal(size=(20, 32))), target_rate=0.02,
                    generation=7)
    arrays = cal.to_arrays()
    assert all(a.dtype != object for a in arrays.values())
    back = Calibration.from_arrays(arrays)
    assert back.artists == cal.artists and back.generation == 7 and back.n_background == 20
    assert back.target_rate == back.fpr == 0.02 and back.null_source == "background"
    assert back.flag_threshold == cal.flag_threshold and np.array_equal(back.null, cal.null)
    assert (back.k, back.weight) == (cal.k, cal.weight)
    assert all(np.array_equal(a, b) for a, b in zip(back.negatives, cal.negatives))


@pytest.mark.slow  # a registry of 3,000 artists (12,000 works) scored against every work
def test_sampled_negatives_match_the_full_pool_and_leave_the_promise_alone():
    """At 12,000 works by 3,000 artists the per-artist negatives are a sample of
    5,000 rows: the flag threshold (every background image) is identical to the
    full pool's, means and spreads agree closely, and p-values of fresh images
    agree within a few hundredths; the image-level rate still holds on fresh
    unrelated images."""
    rng = np.random.default_rng(11)
    _, works, labels = registry(3000, rng)
    bg, groups = unrelated(1500, rng)
    sampled = calibrate(works, labels, bg, 0.05, background_groups=groups)
    full = calibrate(works, labels, bg, 0.05, background_groups=groups, negative_sample=10**9)
    assert len(full.negatives[0]) > 10_000 and len(sampled.negatives[0]) < 5000
    assert sampled.flag_threshold == full.flag_threshold
    np.testing.assert_array_equal(sampled.null, full.null)
    assert np.abs(sampled.mu - full.mu).max() < 0.01
    assert np.abs(sampled.sigma / full.sigma - 1).max() < 0.1
    fresh, _ = unrelated(400, rng)
    raw = artist_score_matrix(fresh, works, labels, full.artists)
    r = scoring.neighbourhood(fresh, bg, full.k)
    def p_values(cal: Calibration) -> np.ndarray:
        """Every (image, artist) p-value, column by column; spot-checked against ``cal.p_value``."""
        corrected = scoring.correct(raw, r, cal.artist_r, cal.weight)
        out = np.empty(corrected.shape)
        for j, neg in enumerate(cal.negatives):
            out[:, j] = (len(neg) - np.searchsorted(neg, corrected[:, j], side="left") + 1) / (len(neg) + 1)
        for i, j in zip(rng.integers(len(raw), size=200), rng.integers(raw.shape[1], size=200)):
            assert out[i, j] == cal.p_value(int(j), float(corrected[i, j]))
        return out

    p_s, p_f = p_values(sampled), p_values(full)
    assert np.abs(p_s - p_f).max() < 0.03
    assert flag_rate(sampled, works, labels, fresh, bg) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 400)
