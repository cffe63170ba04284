"""Calibration: per-artist thresholds that keep their rate on fresh negatives."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import unit
from mimicry.calibration import Calibration, calibrate
from mimicry.errors import InputError
from mimicry.scoring import artist_score_matrix


def test_flagged_share_of_negatives_stays_near_target():
    """Synthetic vectors: 5 artists, 2000 background negatives for calibration,
    a fresh 4000 negatives from the same distribution to check."""
    rng = np.random.default_rng(0)
    dim = 32
    centres = unit(rng.normal(size=(5, dim)))
    works = unit(np.repeat(centres, 20, axis=0) + 0.15 * rng.normal(size=(100, dim)))
    artists = [f"a{i}" for i in range(5) for _ in range(20)]
    cal = calibrate(works, artists, background=unit(rng.normal(size=(2000, dim))), target_rate=0.05)
    fresh = unit(rng.normal(size=(4000, dim)))
    raw = artist_score_matrix(fresh, works, artists, cal.artists)
    share = cal.flags(raw).mean(axis=0)
    assert np.all(np.abs(share - 0.05) < 0.02), share
    # Imitations (near an artist's centre) pass that artist's threshold.
    imitations = unit(centres[2] + 0.15 * rng.normal(size=(50, dim)))
    raw = artist_score_matrix(imitations, works, artists, cal.artists)
    assert cal.flags(raw)[:, 2].mean() > 0.9


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

    cal = calibrate(all_works, labels, background=mixtures(1000), target_rate=0.01)
    raw = artist_score_matrix(mixtures(1000), all_works, labels, cal.artists)
    hub_j = cal.artists.index("hub")
    assert (raw.argmax(axis=1) == hub_j).mean() > 0.5  # by raw cosine the hub wins most
    assert cal.flags(raw)[:, hub_j].mean() < 0.03  # calibrated: about 1%
    assert cal.flags(raw).any(axis=1).mean() < 0.08


def test_p_values_are_the_share_of_negatives_at_least_as_high():
    neg = np.arange(1, 100, dtype=np.float32) / 100  # 0.01 .. 0.99, 99 negatives
    cal = Calibration(["a"], np.array([0.5]), np.array([0.3]), np.array([0.98]), [neg], 0.01, 0, 0)
    scores = np.array([[0.995], [0.985], [0.5], [0.0]])
    # 0 above -> 1/100; exactly one (0.99) above -> 2/100; 50 at or above 0.5 -> 51/100; all -> 1
    assert np.allclose(cal.p_values(scores)[:, 0], [0.01, 0.02, 0.51, 1.0])
    assert cal.flags(scores)[:, 0].tolist() == [True, True, False, False]


def test_threshold_never_flags_more_than_the_target_share():
    rng = np.random.default_rng(3)
    for n in (10, 99, 100, 101, 1000):
        vecs = unit(rng.normal(size=(n + 5, 16)))
        cal = calibrate(vecs, ["x"] * 5 + ["y"] * n, target_rate=0.05)
        j = cal.artists.index("x")
        share = (cal.negatives[j] > cal.threshold[j]).mean()
        assert share <= 0.05, (n, share)


def test_rate_outside_zero_one_is_an_input_error():
    with pytest.raises(InputError, match="between 0 and 1"):
        calibrate(unit(np.eye(4)), ["a", "a", "b", "b"], target_rate=1.5)


def test_calibration_round_trips_through_plain_arrays():
    rng = np.random.default_rng(4)
    vecs = unit(rng.normal(size=(30, 8)))
    cal = calibrate(vecs, [f"artist-{i % 3}" for i in range(30)], background=unit(rng.normal(size=(20, 8))),
                    target_rate=0.02, generation=7)
    arrays = cal.to_arrays()
    assert all(a.dtype != object for a in arrays.values())
    back = Calibration.from_arrays(arrays)
    assert back.artists == cal.artists and back.generation == 7 and back.n_background == 20
    assert back.target_rate == back.fpr == 0.02
    assert np.array_equal(back.threshold, cal.threshold)
    assert all(np.array_equal(a, b) for a, b in zip(back.negatives, cal.negatives))
