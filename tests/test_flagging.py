"""The image-flag rule in one place: the null images are judged by the very
statistic scans are judged on, the flag line on the raw scale is the rule
that flags, and a fresh calibration judges alike through either entry point."""

from __future__ import annotations

import numpy as np

from helpers import unit
from mimicry import scoring
from mimicry.calibration import calibrate, calibrate_snapshot
from mimicry.flagging import flag_at, image_verdicts, judge, null_statistic, with_calibration
from mimicry.scanning import Calibrated, image_matches, judge_aligned, query_neighbourhood
from mimicry.scoring import artist_columns, artist_max, score
from mimicry.store import Snapshot


def registry(rng, n_artists: int = 12, works: int = 6, dim: int = 24):
    centres = unit(rng.normal(size=(n_artists, dim)))
    vecs = unit(np.repeat(centres, works, axis=0) + 0.25 * rng.normal(size=(n_artists * works, dim)))
    return centres, vecs.astype(np.float32), [f"artist-{i:02d}" for i in range(n_artists) for _ in range(works)]


def background(rng, centres, groups: int = 60, per_group: int = 5):
    """Unrelated images in groups (makers), each group a mixture of registered styles."""
    own = unit(rng.normal(size=(groups, centres.shape[1])) + centres[rng.integers(len(centres), size=groups)])
    vecs = unit(np.repeat(own, per_group, axis=0) + 0.2 * rng.normal(size=(groups * per_group, centres.shape[1])))
    return vecs.astype(np.float32), np.repeat(np.arange(groups), per_group)


def test_background_scanned_as_queries_gets_exactly_its_null_statistic():
    """Each background image judged as a scan judges a query, its own group left
    out of its reference neighbours, has exactly the statistic calibration put
    among the null images: the threshold rests on the statistic scans use."""
    rng = np.random.default_rng(0)
    centres, works, labels = registry(rng)
    bg, groups = background(rng, centres)
    cal = calibrate(works, labels, background=bg, background_groups=groups, target_rate=0.05)
    cols = artist_columns(labels, cal.artists)
    r = scoring.neighbourhood(bg, bg, cal.k, groups, groups)
    scanned = judge(artist_max(bg, works, cols), r, cal).statistic
    np.testing.assert_array_equal(np.sort(scanned), cal.null)
    np.testing.assert_array_equal(null_statistic(bg, works, cols, r, cal.artist_r, cal.weight), scanned)

    # Through a snapshot: a group's images scanned against a reference without that group.
    g = groups == 7
    snap = with_calibration(Snapshot.from_labelled(works, labels, background=bg[~g]), cal)
    aligned = Calibrated.align(snap)
    got = judge_aligned(snap, aligned, score(snap, bg[g]).raw, bg[g]).statistic
    np.testing.assert_allclose(got, scanned[g], rtol=0, atol=1e-6)


def test_portfolio_null_is_each_work_scanned_against_the_other_artists():
    rng = np.random.default_rng(1)
    _, works, labels = registry(rng)
    cal = calibrate(works, labels, target_rate=0.05)
    raw = artist_max(works, works, artist_columns(labels, cal.artists))
    own = np.array([cal.artists.index(a) for a in labels])
    raw[np.arange(len(raw)), own] = -np.inf  # leave-one-artist-out
    scanned = judge(raw, np.zeros(len(works), np.float32), cal).statistic
    np.testing.assert_array_equal(np.sort(scanned), cal.null)


def calibrated_snapshot(rng):
    centres, works, labels = registry(rng)
    bg, groups = background(rng, centres)
    snap = Snapshot.from_labelled(works, labels, background=bg, background_groups=groups)
    snap = with_calibration(snap, calibrate_snapshot(snap, 0.05))
    queries = np.concatenate([unit(centres[rng.integers(len(centres), size=60)] + 0.2 * rng.normal(size=(60, 24))),
                              background(rng, centres, 20, 3)[0]]).astype(np.float32)
    return snap, queries


def test_flag_at_is_the_rule_that_flags():
    """An image's best match passes its flag line exactly when the image is
    flagged; every other match is unflagged, whatever its line."""
    rng = np.random.default_rng(2)
    snap, queries = calibrated_snapshot(rng)
    aligned = Calibrated.align(snap)
    j = judge_aligned(snap, aligned, score(snap, queries).raw, queries)
    line = flag_at(aligned.cal, j.raw, j.corrected)
    rows = np.arange(len(queries))
    np.testing.assert_array_equal(j.raw[rows, j.best] > line[rows, j.best], j.flagged)
    assert 0 < j.flagged.sum() < len(queries)

    results = image_matches(snap, queries, top=3, evidence=1)
    for q, (matches, artist, _) in enumerate(results):
        best = matches[0]
        assert (best.score > best.flag_at) == (artist is not None) == bool(best.flagged), q
        assert [m.artist for m in matches if m.flagged] == ([artist] if artist else [])
        assert best.flag_at == float(line[q, cal_col(aligned, snap, best.artist)])


def cal_col(aligned: Calibrated, snap: Snapshot, artist: str) -> int:
    return int(np.flatnonzero(aligned.columns == snap.artists.index(artist))[0])


def test_judge_aligned_equals_judge_with_a_fresh_calibration():
    rng = np.random.default_rng(3)
    snap, queries = calibrated_snapshot(rng)
    aligned = Calibrated.align(snap)
    assert np.array_equal(aligned.columns, np.arange(len(snap.artists)))
    raw = score(snap, queries).raw
    a = judge_aligned(snap, aligned, raw, queries)
    b = judge(raw, query_neighbourhood(snap, aligned.cal, queries), aligned.cal)
    for field in ("raw", "corrected", "statistic", "best", "image_p", "flagged"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    np.testing.assert_array_equal(image_verdicts(a), np.where(b.flagged, b.best, -1))
