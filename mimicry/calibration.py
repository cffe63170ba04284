"""Calibration: fitting the image-flag rule's parameters
(:class:`mimicry.flagging.Calibration`) so that an image-level false-flag rate
holds as the registry grows.

How a flag is decided, and the parameters it reads, live in
:mod:`mimicry.flagging`; this module only fits them: the artists' hubness neighbourhoods ``r(a)``, per-artist
negatives (to normalise scores and rank evidence), and the sorted image
statistics of the *null images* (:func:`mimicry.flagging.null_statistic`, the
function scans are judged on) with the flag threshold set on them
(:func:`mimicry.flagging.flag_threshold`).

The null images are the background (``calibrate --background``: art by
nobody registered, a hub's ordinary uploads), each scored with its own group
(its folder, or itself) left out of its reference neighbours. Without a
background they are the portfolio's own works, each scored against the other
artists only (leave-one-artist-out), and the promise is *not certified*; it is
certified with at least ``ceil(3 / A)`` background images (300 for 1%): with
``1 / A`` the realised rate exceeds ``A`` about a third of the time.

With a background, each of its groups with enough works is a *maker*, and the
calibration keeps the null of the maker test (:mod:`mimicry.maker_test`): the
set statistic of each maker's works, scored as its null images are.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from mimicry import flagging, maker_test, scoring
from mimicry.flagging import BACKGROUND, PORTFOLIO, Calibration
from mimicry.model_test import image_strength
from mimicry.scoring import artist_max, columns_of
from mimicry.settings import check_rate

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.store.snapshot import Snapshot

__all__ = ["calibrate", "calibrate_snapshot"]

#: Per-artist negatives are drawn from at most this many rows (other artists'
#: works and background images, one seeded sample shared by every artist):
#: enough for p-values down to 2e-4 and a stable mean and spread, while the
#: calibration of a 100k-work registry costs ``O(sample x works)``, not
#: ``O(works^2)``. Registries whose works and background together are smaller
#: use them all. The flag threshold never uses this sample: it rests on every
#: null image.
NEGATIVE_SAMPLE = 5000
NEGATIVE_SEED = 0


def calibrate(
    work_vecs: np.ndarray, work_artists: Sequence[str], background: np.ndarray | None = None,
    target_rate: float = 0.01, generation: int = 0, background_groups: np.ndarray | None = None,
    k: int = scoring.HUBNESS_K, weight: float = scoring.HUBNESS_WEIGHT,
    negative_sample: int = NEGATIVE_SAMPLE,
) -> Calibration:
    """Builds a :class:`Calibration` at ``target_rate`` (InputError outside (0, 1)).

    ``background``: art by nobody registered, the reference population of the
    hubness correction and the null images of the image-level threshold;
    ``background_groups`` labels its rows (an artist, a folder), so that a
    background image's neighbours leave its own group out (default: itself).
    Time is linear in the works (``negative_sample`` and the background
    against every work; without a background, each work's best other artist
    is quadratic in time but not in memory); memory never holds a works x
    works matrix.
    """
    check_rate("fpr", target_rate)
    work_vecs = np.asarray(work_vecs, dtype=np.float32)
    names, own = np.unique(np.asarray(work_artists, dtype=str), return_inverse=True)
    artists = [str(a) for a in names]
    own = own.astype(np.int64).reshape(-1)
    cols = columns_of(own, len(artists))
    bg = None if background is None or not len(background) else np.asarray(background, np.float32)
    groups = (np.arange(len(bg)) if background_groups is None else np.asarray(background_groups)) \
        if bg is not None else None
    ref_k = k if bg is not None else 0

    work_r = scoring.neighbourhood(work_vecs, bg, ref_k)
    counts = np.bincount(own, minlength=len(artists))
    artist_r = (np.bincount(own, weights=work_r, minlength=len(artists)) / np.maximum(counts, 1)).astype(np.float32)
    bg_r = scoring.neighbourhood(bg, bg, ref_k, groups, groups) if bg is not None else np.zeros(0, np.float32)
    negs = _negatives(work_vecs, own, cols, work_r, bg, bg_r, artist_r, weight, negative_sample)
    mu = np.array([n.mean() if len(n) else 0.0 for n in negs], dtype=np.float32)
    sigma = np.array([max(float(n.std()), 1e-3) if len(n) > 1 else 1.0 for n in negs], dtype=np.float32)

    if bg is not None:  # the background, each image with its own group left out of r(q)
        null = flagging.null_statistic(bg, work_vecs, cols, bg_r, artist_r, weight)
        source = BACKGROUND
    else:  # each work against the other artists only
        null = flagging.null_statistic(work_vecs, work_vecs, cols, work_r, artist_r, weight, exclude=own)
        source = PORTFOLIO
    null = np.sort(null).astype(np.float32)
    cal = Calibration(artists, mu, sigma, negs, artist_r, null, flagging.flag_threshold(null, target_rate),
                      target_rate, generation, 0 if bg is None else len(bg), source, ref_k, weight, time.time())
    if bg is None:
        return cal
    makers = maker_test.maker_null(_makers(bg, groups, work_vecs, cols, bg_r, cal), image_strength(cal))
    return replace(cal, maker_sizes=makers.sizes, maker_stats=makers.stats)


def _makers(bg: np.ndarray, groups: np.ndarray, work_vecs: np.ndarray, cols: list[np.ndarray],
            bg_r: np.ndarray, cal: Calibration, chunk_rows: int = 2048) -> Iterator[maker_test.MakerSet]:
    """Each background group's works as the maker test reads them (in group
    order), scored as null images are, a few thousand rows at a time so memory
    never holds a background x artists matrix; an image's p-value leaves itself
    out of the null images. Groups too small to be makers are skipped unscored."""
    counts = np.unique(groups, return_counts=True)[1]
    members = np.split(np.argsort(groups, kind="stable"), np.cumsum(counts)[:-1])
    batch: list[np.ndarray] = []
    for rows in [m for m in members if len(m) >= maker_test.MIN_MAKER_WORKS] + [None]:
        if rows is not None:
            batch.append(rows)
        if batch and (rows is None or sum(map(len, batch)) >= chunk_rows):
            at = np.concatenate(batch)
            corrected, stat, best = flagging.scan_statistic(artist_max(bg[at], work_vecs, cols), bg_r[at],
                                                             cal.artist_r, cal.weight)
            loo_p = np.maximum(1, len(cal.null) - np.searchsorted(cal.null, stat, side="left")) / len(cal.null)
            x = maker_test.MakerSet(cal.normalise(corrected), best, loo_p)
            for part in np.split(np.arange(len(at)), np.cumsum([len(b) for b in batch])[:-1]):
                yield x.rows(part)
            batch = []


def _negatives(work_vecs: np.ndarray, own: np.ndarray, cols: list[np.ndarray], work_r: np.ndarray,
               bg: np.ndarray | None, bg_r: np.ndarray, artist_r: np.ndarray, weight: float,
               negative_sample: int) -> list[np.ndarray]:
    """Per artist, the sorted corrected scores of one seeded sample of works
    and background rows (:data:`NEGATIVE_SAMPLE`), the artist's own works left out."""
    n_bg = 0 if bg is None else len(bg)
    pool = len(work_vecs) + n_bg
    rows = np.arange(pool) if pool <= negative_sample else \
        np.sort(np.random.default_rng(NEGATIVE_SEED).choice(pool, negative_sample, replace=False))
    from_works = rows < len(work_vecs)
    w_rows, b_rows = rows[from_works], rows[~from_works] - len(work_vecs)
    sample = np.concatenate([work_vecs[w_rows], bg[b_rows] if bg is not None else np.zeros((0, work_vecs.shape[1]), np.float32)])
    sample_r = np.concatenate([work_r[w_rows], bg_r[b_rows] if bg is not None else np.zeros(0, np.float32)])
    sample_own = np.concatenate([own[w_rows], np.full(len(b_rows), -1)])
    corr_s = scoring.correct(artist_max(sample, work_vecs, cols), sample_r, artist_r, weight)
    return [np.sort(corr_s[sample_own != j, j]).astype(np.float32) for j in range(len(cols))]


def calibrate_snapshot(snapshot: Snapshot, target_rate: float) -> Calibration:
    """The calibration of a snapshot's portfolio against its stored background
    (what ``calibrate``, every recalibrating write and ``evaluate`` all run)."""
    from mimicry.errors import InputError

    if len(snapshot.artists) < 2:
        raise InputError(f"{snapshot.folder or 'portfolio'}: calibration needs at least two artists")
    return calibrate(snapshot.vectors, snapshot.row_artist_names, snapshot.background,
                     target_rate=target_rate, generation=snapshot.generation,
                     background_groups=snapshot.background_groups)
