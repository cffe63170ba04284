"""Model-level verdicts: a valid test under the null, strong on sets of near misses."""

from __future__ import annotations

import numpy as np

from mimicry.calibration import Calibration
from mimicry.verdict import artist_tests, best_artists, imitated


def one_artist_calibration(negatives: np.ndarray, fpr: float = 0.01) -> Calibration:
    """One artist whose negatives' scores are ``negatives``, thresholded by the product's own rule."""
    from mimicry.calibration import _threshold

    neg = np.sort(negatives).astype(np.float32)
    return Calibration(["a"], np.array([neg.mean()]), np.array([neg.std()]),
                       np.array([_threshold(neg, fpr)]), [neg], fpr, 0, 0)


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
    assert not cal.flags(samples).any()
    t = artist_tests(samples, cal)[0]
    assert t.p_value < 1e-6 and t.level == 0.05 and len(t.hits) == 16



def test_the_verdict_rule_is_p_below_alpha_strongest_first():
    from mimicry.verdict import ArtistTest

    none = np.zeros(0, dtype=np.int64)
    tests = [ArtistTest(0.01, 0.01, none), ArtistTest(1e-5, 0.01, none), ArtistTest(0.001, 0.01, none),
             ArtistTest(2e-4, 0.02, none)]
    assert imitated(tests, 0.001).tolist() == [1, 3]  # 0.001 itself is not below alpha
    assert imitated(tests, 0.5).tolist() == [1, 3, 2, 0]


def test_each_sample_supports_its_lowest_p_value_artist_ties_to_the_higher_score():
    raw = np.array([[0.9, 0.8], [0.7, 0.95], [0.6, 0.61]])
    p = np.array([[0.01, 0.02], [0.05, 0.05], [1.0, 1.0]])
    assert best_artists(raw, p).tolist() == [0, 1, 1]
    allowed = np.array([[False, True], [False, False], [True, True]])
    assert best_artists(raw, p, allowed).tolist() == [1, -1, 1]
