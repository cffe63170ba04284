"""The maker test: whether a set of samples sits closer to one registered
artist than sets of works by one maker nobody registered do.

A fine-tune's samples are *consistently* near the artist it copies, while no
single sample need be extreme against single images of the background (the
image-level test in :mod:`mimicry.model_test` misses such models). The right
null for a model is "a model of a maker nobody registered": a set of works by
one maker. The background's groups are makers (the first-level sub-folders as
named on the command line: a hub groups its uploads by uploader or by model).

Statistics (:data:`STATISTICS`), each per artist ``a`` for a set of ``n``
images, and for the set its maximum over artists:

- ``makers``: the mean of the top half (``max(1, n // 2)``) of the images'
  normalised hubness-corrected scores for ``a`` (:func:`top_half_mean`): a
  set consistently near one artist, no image of it extreme;
- ``images``: ``-log10`` of the image-level test's p-value for ``a``
  (:func:`mimicry.model_test.image_test_p`), so that test, which counts
  samples as if independent, is judged against coherent makers as well.

Null. At calibration every maker with at least :data:`MIN_MAKER_WORKS` works
gets each statistic on the first ``s`` of a seeded permutation of its works, for
each ``s`` in :data:`SIZES` up to its count (:func:`maker_null`).

p-value of artist ``a`` for a set of ``n`` samples: each maker ``k`` is compared
at the size ``s_k``, the largest of :data:`SIZES` at most ``min(n, m_k)``. The
set's score for ``a`` at ``s`` is its :func:`top_half_mean` (``s = n``), or the
mean of it over :data:`SUBSETS` seeded random ``s``-subsets of the samples
(``s < n``). ``p_a = (1 + #{k : T_k(s_k) >= t_a(s_k)}) / (M + 1)``.

Why it is valid at any sample count. At ``s = n`` a set from an unregistered
maker and a null maker's ``n`` works are exchangeable, so ``p`` is a conformal
p-value. Where the samples outnumber a maker's works, the comparison is still at
the maker's size, between one of its subsets and an *average* over the
samples' subsets. The average has the same mean and a lighter upper tail, so it
can only make ``p`` larger. ``T_k`` is a maximum over artists, so every
artist's ``p_a`` is valid at once: the chance that *any* artist gets
``p_a <= x`` under the null is at most ``x``, at any registry size. The
smallest p-value is ``1 / (M + 1)``: a null of ``M`` makers cannot resolve a
smaller level (see :func:`mimicry.model_test.tier_of`).
Tests: ``tests/test_maker_test.py`` (synthetic makers at 1 and 1,000 artists,
sets of 1 to 64 samples against makers of 5 to 10 works).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

__all__ = ["MIN_MAKER_WORKS", "SIZES", "STATISTICS", "SUBSETS", "MakerNull", "MakerSet", "maker_null",
           "maker_p_values", "top_half_mean"]

#: Set sizes at which each maker's statistic is kept.
SIZES = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64])
#: A background group with fewer works is not a maker set (a loose upload is its own group).
MIN_MAKER_WORKS = 3
#: Random subsets the samples' score is averaged over when compared below their count.
SUBSETS = 16
SEED = 0
#: The maker test's statistics, in the order :class:`MakerNull` keeps them.
STATISTICS = ("makers", "images")


def top_half_mean(z: np.ndarray) -> np.ndarray:
    """Per artist (column), the mean of the top ``max(1, n // 2)`` of ``n`` rows."""
    k = max(1, len(z) // 2)
    return np.sort(z, axis=0)[len(z) - k:].mean(axis=0)


@dataclass(frozen=True)
class MakerSet:
    """A set of images as the maker test reads it: normalised corrected scores
    ``z`` ``(n, n_artists)``, each image's raw-best artist and image-level p-value."""

    z: np.ndarray
    best: np.ndarray
    image_p: np.ndarray

    def rows(self, at: np.ndarray) -> MakerSet:
        return MakerSet(self.z[at], self.best[at], self.image_p[at])


#: ``image_strength(set)``: per artist, ``-log10`` of the image-level test's p-value.
ImageStrength = Callable[[MakerSet], np.ndarray]


def _statistics(x: MakerSet, image_strength: ImageStrength) -> np.ndarray:
    """The :data:`STATISTICS` of a set, ``(len(STATISTICS), n_artists)``."""
    return np.stack([top_half_mean(x.z), image_strength(x)])


@dataclass(frozen=True)
class MakerNull:
    """The null of unregistered makers: each maker's count of works and each
    statistic's maximum over artists at every size of :data:`SIZES` (NaN past its count)."""

    sizes: np.ndarray  # (M,) works per maker
    stats: np.ndarray  # (M, len(STATISTICS), len(SIZES))

    @property
    def makers(self) -> int:
        return len(self.sizes)


def maker_null(makers: Iterable[MakerSet], image_strength: ImageStrength, seed: int = SEED) -> MakerNull:
    """The :class:`MakerNull` of makers, one :class:`MakerSet` of its works
    each; makers with fewer than :data:`MIN_MAKER_WORKS` works are left out."""
    rng = np.random.default_rng(seed)
    sizes, rows = [], []
    for x in makers:
        if len(x.z) < MIN_MAKER_WORKS:
            continue
        x = x.rows(rng.permutation(len(x.z)))
        stats = np.full((len(STATISTICS), len(SIZES)), np.nan, dtype=np.float32)
        for i, s in enumerate(SIZES):
            if s > len(x.z):
                break
            stats[:, i] = _statistics(x.rows(np.arange(s)), image_strength).max(axis=1)
        sizes.append(len(x.z))
        rows.append(stats)
    return MakerNull(np.array(sizes, dtype=np.int64),
                     np.stack(rows) if rows else np.zeros((0, len(STATISTICS), len(SIZES)), np.float32))


def _size_index(n: int, sizes: np.ndarray) -> np.ndarray:
    """Per maker, the index in :data:`SIZES` it is compared at for ``n`` samples."""
    return np.searchsorted(SIZES, np.minimum(n, sizes), side="right") - 1


def _scores_at(x: MakerSet, s: int, image_strength: ImageStrength, rng: np.random.Generator) -> np.ndarray:
    """The samples' statistics per artist at size ``s`` (module docstring)."""
    n = len(x.z)
    if s >= n:
        return _statistics(x, image_strength)
    return np.mean([_statistics(x.rows(rng.choice(n, s, replace=False)), image_strength)
                    for _ in range(SUBSETS)], axis=0)


def maker_p_values(x: MakerSet, null: MakerNull, image_strength: ImageStrength, seed: int = SEED
                   ) -> np.ndarray | None:
    """Per statistic and artist ``(len(STATISTICS), n_artists)``, the maker-test
    p-values of samples ``x``; None when the null holds no maker. The same
    samples always get the same p-values (the subsets are seeded)."""
    if not null.makers or not len(x.z):
        return None
    rng = np.random.default_rng(seed)
    at = _size_index(len(x.z), null.sizes)
    exceed = np.zeros((len(STATISTICS), x.z.shape[1]))
    for i in np.unique(at):
        t = _scores_at(x, int(SIZES[i]), image_strength, rng)
        for k in range(len(STATISTICS)):
            ranked = np.sort(null.stats[at == i, k, i])
            exceed[k] += len(ranked) - np.searchsorted(ranked, t[k] - 1e-9, side="left")
    return (1.0 + exceed) / (null.makers + 1.0)
