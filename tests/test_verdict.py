"""Model-level verdicts: valid under the null at any registry size, strong on
sets of near misses; the verdict rule in one place."""

from __future__ import annotations

from fractions import Fraction
from math import comb, factorial

import numpy as np
import pytest

from mimicry.flagging import Calibration, Judged, flag_threshold, flagged, image_p_values
from mimicry.model_test import ArtistTest, artist_tests, beta_binomial_tail, imitated


def null_calibration(null: np.ndarray, n_artists: int, rate: float = 0.01) -> Calibration:
    null = np.sort(null).astype(np.float32)
    z = np.zeros(n_artists, dtype=np.float32)
    return Calibration([f"a{i}" for i in range(n_artists)], z, z + 1, [null] * n_artists, z, null,
                       flag_threshold(null, rate), rate, 0, len(null), "background")


def judged(statistic: np.ndarray, best: np.ndarray, cal: Calibration) -> Judged:
    raw = np.zeros((len(statistic), len(cal.artists)))
    return Judged(raw, raw, statistic, best, image_p_values(cal, statistic), flagged(cal, statistic))


def exact_tail(k: int, n: int, a: int, b: int) -> Fraction:
    """P(X >= k), X ~ BetaBinomial(n, a, b), in exact rational arithmetic."""
    def beta(x: int, y: int) -> Fraction:  # B(x, y) for positive integers
        return Fraction(factorial(x - 1) * factorial(y - 1), factorial(x + y - 1))
    return sum((comb(n, j) * beta(j + a, n - j + b) / beta(a, b) for j in range(k, n + 1)), Fraction(0))


def test_the_beta_binomial_tail_keeps_its_digits_far_into_the_tail():
    # Exact rational tails, from 1 down to about 1e-60: 1 - cdf would give 0 below 1e-16.
    for n, a, b in ((16, 3, 298), (64, 5, 496), (40, 1, 100), (30, 100, 401)):
        counts = np.arange(n + 1)[:, None]
        got = beta_binomial_tail(counts, n, np.array([a]), np.array([b]))[:, 0]
        want = np.array([float(exact_tail(int(k), n, a, b)) for k in counts[:, 0]])
        assert got[0] == pytest.approx(1.0)
        assert want[-1] < 1e-16, (n, a, b)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)


def test_model_level_test_is_valid_under_the_null_at_any_registry_size():
    # Samples from the null images' own distribution, each supporting a random
    # artist: p < alpha in at most about alpha of the sets, for 1 or 1,000 artists.
    rng = np.random.default_rng(0)
    for n_artists in (1, 1000):
        cal = null_calibration(rng.normal(size=2000), n_artists)
        for n in (8, 50, 200):
            p = np.array([min(t.p_value for t in artist_tests(
                judged(rng.normal(size=n), rng.integers(n_artists, size=n), cal), cal))
                for _ in range(300)])
            assert (p < 0.05).mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300), (n_artists, n)
            assert (p < 0.001).mean() <= 1 / 300, (n_artists, n)


def test_model_level_test_holds_over_the_draw_of_the_null_images():
    """Each trial draws its own 300 null images (a hub's calibration) and then
    200 unrelated samples, all nearest to one artist (the worst case): a verdict
    in at most about alpha of the trials."""
    rng = np.random.default_rng(2)
    hits = 0
    trials = 1000
    for _ in range(trials):
        cal = null_calibration(rng.normal(size=300), 1)
        j = judged(rng.normal(size=200), np.zeros(200, dtype=int), cal)
        hits += len(imitated(artist_tests(j, cal), 0.001)) > 0
    assert hits / trials <= 0.004, hits  # the binomial tail let through about 0.009 here


def test_model_level_test_counts_samples_just_short_of_the_flag():
    # Every sample sits between the 96% and 98.5% points of the null: none is
    # flagged, yet sixteen of them together are strong evidence.
    rng = np.random.default_rng(1)
    null = rng.normal(size=400)
    cal = null_calibration(null, 3)
    lo, hi = np.quantile(null, [0.96, 0.985])
    j = judged(rng.uniform(lo, hi, size=16), np.full(16, 2), cal)
    assert not j.flagged.any()
    t = artist_tests(j, cal)[2]
    assert t.p_value < 1e-6 and t.level == 0.05 and len(t.hits) == 16
    assert artist_tests(j, cal)[0].p_value == 1.0  # samples support one artist only


def test_the_verdict_rule_is_p_below_alpha_strongest_first():
    none = np.zeros(0, dtype=np.int64)
    tests = [ArtistTest(0.01, 0.01, none), ArtistTest(1e-5, 0.01, none), ArtistTest(0.001, 0.01, none),
             ArtistTest(2e-4, 0.02, none)]
    assert imitated(tests, 0.001).tolist() == [1, 3]  # 0.001 itself is not below alpha
    assert imitated(tests, 0.5).tolist() == [1, 3, 2, 0]
