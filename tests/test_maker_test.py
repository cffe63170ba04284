"""The maker test and the two-tier model verdict: valid against held-out
makers at any sample count (more samples than a maker has works included) and
at any registry size; powerful on a set consistently near one artist."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mimicry.flagging import Calibration, Judged, flag_threshold, flagged, image_p_values
from mimicry.maker_test import MIN_MAKER_WORKS, STATISTICS, MakerSet, maker_null, maker_p_values, top_half_mean
from mimicry.model_test import IMITATES, REVIEW, image_strength, judge_set, tier_of

TAU = 0.5  # spread of a maker's affinity to each artist: one maker's works share it


class World:
    """Synthetic makers: maker ``k``'s works score ``mu_k[a] + noise`` for
    artist ``a`` (normalised corrected scores), ``mu_k ~ N(0, TAU^2)`` drawn
    afresh per maker, so a maker's works are coherent, as real makers' are."""

    def __init__(self, n_artists: int, seed: int, tau: float = TAU) -> None:
        self.n_artists, self.tau = n_artists, tau
        self.rng = np.random.default_rng(seed)

    def maker(self, n: int, boost: tuple[int, float] | None = None) -> np.ndarray:
        mu = self.rng.normal(0, self.tau, self.n_artists)
        if boost is not None:
            mu[boost[0]] += boost[1]
        return (mu[None, :] + self.rng.normal(size=(n, self.n_artists))).astype(np.float32)

    def calibration(self, n_makers: int, rate: float = 0.01) -> Calibration:
        """Null images and null makers as ``calibrate`` keeps them (an image's
        p-value leaves itself out)."""
        makers = [self.maker(int(self.rng.integers(5, 11))) for _ in range(n_makers)]
        null = np.sort(np.concatenate([m.max(axis=1) for m in makers])).astype(np.float32)
        z = np.zeros(self.n_artists, np.float32)
        cal = Calibration([f"a{i}" for i in range(self.n_artists)], z, z + 1, [null] * self.n_artists, z, null,
                          flag_threshold(null, rate), rate, 0, len(null), "background", 0, 0.0, 0.0)
        sets = [MakerSet(m, m.argmax(axis=1), (len(null) - np.searchsorted(null, m.max(axis=1))) / len(null))
                for m in makers]
        mk = maker_null(sets, image_strength(cal))
        return replace(cal, maker_sizes=mk.sizes, maker_stats=mk.stats)


def as_set(z: np.ndarray, cal: Calibration) -> MakerSet:
    j = judged(z, cal)
    return MakerSet(z, j.best, j.image_p)


def judged(z: np.ndarray, cal: Calibration) -> Judged:
    """Samples whose raw and corrected scores are ``z`` (hubness weight 0)."""
    best = z.argmax(axis=1)
    stat = z[np.arange(len(z)), best]
    return Judged(z, z, stat, best, image_p_values(cal, stat), flagged(cal, stat))


LARGE = pytest.param(1000, marks=pytest.mark.slow)  # a registry of 1,000 artists


@pytest.mark.parametrize("n_artists", [1, LARGE])
def test_maker_p_values_are_valid_at_any_sample_count_and_registry_size(n_artists):
    # 300 null makers of 5-10 works; held-out makers' sets of 1 to 64 samples,
    # most of them more samples than any null maker has works.
    world = World(n_artists, seed=n_artists)
    cal = world.calibration(300)
    trials = 100
    for n in (1, 4, 16, 64):
        p = np.array([maker_p_values(as_set(world.maker(n), cal), cal.makers, image_strength(cal)).min(axis=1)
                      for _ in range(trials)])
        bound = 0.05 + 3 * np.sqrt(0.05 * 0.95 / trials)
        for k, name in enumerate(STATISTICS):  # each statistic on its own
            assert (p[:, k] <= 0.05).mean() <= bound, (n_artists, n, name, (p[:, k] <= 0.05).mean())
        assert p.min() >= 1 / 301  # the null's resolution: never below 1 / (M + 1)


@pytest.mark.parametrize("n_artists", [1, LARGE])
@pytest.mark.parametrize("tau", [0.0, TAU])
def test_both_tiers_stay_valid_on_held_out_makers(n_artists, tau):
    """Sets of 8 to 32 samples from makers nobody registered, for 1 or 1,000
    artists: a verdict at either tier in at most about 5% of them. At the
    imitates tier, at most about 0.1% when samples are independent (``tau`` 0)
    and at most the maker gate's 2.5% when a maker's works share its style
    (``tau`` 0.5: the image test alone, counting them as independent, acts on
    some of those). Both tiers are backed as the rule says for 300 makers."""
    world = World(n_artists, seed=10 + n_artists, tau=tau)
    cal = world.calibration(300)
    trials = 150
    review = imitates = 0
    for t in range(trials):
        sj = judge_set(judged(world.maker((8, 16, 32)[t % 3]), cal), cal, 0.001, 0.05)
        assert sj.tiers[IMITATES].rule == "images and makers" and sj.tiers[REVIEW].rule == "images or makers"
        imitates += len(sj.imitates) > 0
        review += len(sj.imitates) + len(sj.review) > 0
    assert review / trials <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / trials), review
    assert imitates <= (1 if tau == 0 else 0.025 * trials), imitates


def test_a_set_consistently_near_one_artist_is_found_by_the_makers_not_the_images():
    # A maker's works all about three spreads closer to artist 3 than usual:
    # no single sample need be extreme, the image test alone rarely acts at
    # 0.001, the maker test names artist 3 and sends the set to review.
    world = World(50, seed=3)
    cal = world.calibration(300)
    review = named = imitates = 0
    for _ in range(20):
        sj = judge_set(judged(world.maker(16, boost=(3, 3.0)), cal), cal, 0.001, 0.05)
        review += 3 in sj.review or 3 in sj.imitates
        imitates += 3 in sj.imitates
        named += int(sj.p_makers.argmin()) == 3
    assert review >= 14 and named >= 18 and imitates <= review, (review, named, imitates)


def test_tiers_say_when_they_cannot_fire():
    world = World(5, seed=4)
    few = world.calibration(10)  # 1/11 cannot reach 0.025: the makers back no tier
    t = tier_of(REVIEW, 0.05, few, 16, 0.05)
    assert t.rule == "images" and t.makers == 10 and not t.certified
    assert tier_of(IMITATES, 0.001, few, 16, 0.05).rule == "images"
    assert not tier_of(IMITATES, 0.001, few, 1, 0.05).resolvable  # one sample cannot reach 0.001
    many = world.calibration(60)
    assert tier_of(REVIEW, 0.05, many, 16, 0.05).to_dict() == {
        "alpha": 0.05, "makers": 60, "resolvable": True, "certified": False, "rule": "images or makers",
        "backed_by": ["images", "makers"]}  # certified with ceil(3 / 0.025) = 120 makers
    assert tier_of(IMITATES, 0.001, world.calibration(120), 16, 0.05).certified


def test_small_groups_are_not_makers_and_the_null_is_seeded():
    rng = np.random.default_rng(5)
    groups = [rng.normal(size=(m, 4)).astype(np.float32) for m in (1, 2, MIN_MAKER_WORKS, 7, 70)]
    sets = [MakerSet(g, g.argmax(axis=1), np.full(len(g), 0.5)) for g in groups]
    cal = World(4, 0).calibration(5)
    null = maker_null(sets, image_strength(cal))
    assert null.sizes.tolist() == [MIN_MAKER_WORKS, 7, 70]
    assert np.isnan(null.stats[0, :, 3]).all() and np.isfinite(null.stats[2]).all()  # sizes past 64 are capped
    np.testing.assert_array_equal(maker_null(sets, image_strength(cal)).stats, null.stats)
    x = as_set(rng.normal(size=(9, 4)).astype(np.float32), cal)
    first = maker_p_values(x, null, image_strength(cal))
    assert first.shape == (len(STATISTICS), 4) and np.array_equal(first, maker_p_values(x, null, image_strength(cal)))
    assert top_half_mean(np.array([[1.0], [5.0], [3.0], [0.0]])).tolist() == [4.0]
