"""Screening recorded vectors again, exactly as a scan would judge them now:
the image test for one artist with a fast path (:func:`screen_images`), and
the model test on many sample sets at once (:func:`model_tiers`). What
:mod:`mimicry.moderation.lookback` runs over the history.

Promise: :func:`screen_images` says an image is flagged as the artist exactly
when :func:`mimicry.scanning.image_matches` would. It computes an upper bound
of each image's statistic for the artist (:class:`Bound`: its raw score, one
matrix product with the artist's works, less a lower bound of its hubness
neighbourhood) and runs the full image test only where the bound passes the
flag threshold: a bound below it proves the image is not flagged as the artist.

:func:`rejudged_images` and :func:`rejudged_model` give the whole result a
scan would give now (matches and evidence, or the model verdict), for the few
recorded scans a lookback opens or joins a case for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.results import ModelVerdict, ScanResult
    from mimicry.store.snapshot import Snapshot

#: Slack on the bound for float32 rounding (similarities are exact to ~1e-6).
MARGIN = 1e-4
#: Anchors of the neighbourhood's lower bound (see :class:`Bound`).
ANCHORS = 64


@dataclass(frozen=True)
class Bound:
    """An upper bound of images' statistic for one artist: ``raw - w/2 (lb(q) + r(a))``
    where ``raw`` is exact (the artist's works) and ``lb(q) <= r(q)``: the
    mean of the ``k`` nearest background rows is at least the mean of any
    ``k`` of them, so ``lb(q) = max_j q . c_j`` over centroids ``c_j`` of
    ``k`` background rows each (the rows nearest an anchor)."""

    works: np.ndarray  # the artist's works, (n, dim)
    centroids: np.ndarray  # (m, dim); none: r(q) is 0 (no background)
    line: float  # the flag threshold plus w/2 r(a), less the margin
    weight: float  # the correction's weight w

    @staticmethod
    def of(snapshot: Snapshot, column: int) -> Bound | None:
        """The bound of snapshot artist ``column``; None when no image can be
        flagged as them (uncalibrated, not covered, or no threshold)."""
        from mimicry.scanning import Calibrated

        aligned = Calibrated.align(snapshot)
        if aligned is None or column not in aligned.columns:
            return None
        cal = aligned.cal
        j = int(np.flatnonzero(aligned.columns == column)[0])
        if not cal.can_flag:
            return None
        works = snapshot.rows(snapshot.columns[column]).astype(np.float32)
        bg = snapshot.background if cal.k else None
        cents = _centroids(bg, cal.k) if bg is not None and len(bg) else np.zeros((0, works.shape[1]), np.float32)
        line = cal.flag_threshold + cal.weight * float(cal.artist_r[j]) / 2 - MARGIN
        return Bound(works, cents, line, cal.weight)

    def passes(self, queries: np.ndarray) -> np.ndarray:
        """Whether each query's bound passes: False proves it is not flagged as the artist."""
        raw = (queries @ self.works.T).max(axis=1)
        lb = (queries @ self.centroids.T).max(axis=1) if len(self.centroids) else np.zeros(len(queries))
        return raw - self.weight * lb / 2 > self.line


def _centroids(bg: np.ndarray, k: int) -> np.ndarray:
    """Up to :data:`ANCHORS` centroids, each of the ``k`` background rows nearest an anchor."""
    kk = min(k, len(bg))
    anchors = bg[np.linspace(0, len(bg) - 1, min(ANCHORS, len(bg))).astype(int)]
    near = np.argpartition(-(anchors @ bg.T), kk - 1, axis=1)[:, :kk]
    return bg[near].mean(axis=1).astype(np.float32)


def flagged_as(snapshot: Snapshot, queries: np.ndarray) -> np.ndarray:
    """Each query's verdict as the scan gives it (:func:`mimicry.scanning.image_matches`):
    the snapshot column it is flagged as, or -1."""
    from mimicry.flagging import image_verdicts
    from mimicry.scanning import Calibrated, judge_aligned
    from mimicry.scoring import score

    aligned = Calibrated.align(snapshot)
    if aligned is None or not len(queries):
        return np.full(len(queries), -1)
    v = image_verdicts(judge_aligned(snapshot, aligned, score(snapshot, queries, need=1).raw, queries))
    return np.where(v >= 0, aligned.columns[np.maximum(v, 0)], -1)


def screen_images(snapshot: Snapshot, queries: np.ndarray, artist: str) -> np.ndarray:
    """Whether each query is flagged as ``artist`` now: the bound on all, the
    full image test only where the bound passes."""
    out = np.zeros(len(queries), dtype=bool)
    if artist not in snapshot.artists or not len(queries):
        return out
    column = snapshot.artists.index(artist)
    key = ("lookback-bound", column)  # made once per snapshot and artist
    if key not in snapshot.memo:
        snapshot.memo[key] = Bound.of(snapshot, column)
    bound = snapshot.memo[key]
    if bound is None:
        return out
    cand = np.flatnonzero(bound.passes(queries))
    out[cand] = flagged_as(snapshot, queries[cand]) == column
    return out


@dataclass(frozen=True)
class ModelTest:
    """The model test's levels, and the artists and works a re-judged result
    shows (the index's settings)."""

    alpha: float = 0.001
    review_alpha: float = 0.05
    sample_range: tuple[int, int] = (8, 200)
    top: int = 3
    evidence: int = 3


def model_tiers(snapshot: Snapshot, sets: list[np.ndarray], test: ModelTest) -> list[tuple[str, list[str]]]:
    """Each sample set's tier and artists as :func:`mimicry.moderation.history.model_tier`
    of :func:`mimicry.scanning.judge_model` gives them (the same rule,
    :func:`mimicry.model_test.judge_set`), every set's samples scored in one pass."""
    from mimicry.model_test import judge_set
    from mimicry.moderation.history import tier_of
    from mimicry.scanning import Calibrated, judge_aligned
    from mimicry.scoring import score

    aligned = Calibrated.align(snapshot)
    nonempty = [v for v in sets if len(v)]
    if aligned is None or not nonempty:
        return [("none", [])] * len(sets)
    allv = np.concatenate(nonempty)
    judged = judge_aligned(snapshot, aligned, score(snapshot, allv, need=1).raw, allv)
    out, at = [], 0
    for v in sets:
        if not len(v):
            out.append(("none", []))
            continue
        sj = judge_set(judged.subset(np.arange(at, at + len(v))), aligned.cal, test.alpha, test.review_alpha)
        at += len(v)
        out.append(tier_of([aligned.cal.artists[j] for j in sj.imitates], [aligned.cal.artists[j] for j in sj.review]))
    return out


def rejudged_images(snapshot: Snapshot, vectors: np.ndarray, names: list[str], shas: list[str],
                    test: ModelTest) -> list[ScanResult]:
    """Each recorded image's result as a scan of it would give it now
    (:func:`mimicry.scanning.iter_scan`), from its stored vector."""
    from mimicry.flagging import calibration_of
    from mimicry.results import ScanResult
    from mimicry.scanning import image_matches, scan_warnings

    cal = calibration_of(snapshot)
    warnings = scan_warnings(snapshot, cal)
    promise = cal.promise() if cal is not None else None
    return [ScanResult(name, matches, None, artist, sha, list(warnings), p, promise, vec)
            for name, sha, vec, (matches, artist, p) in zip(
                names, shas, vectors, image_matches(snapshot, vectors, test.top, test.evidence))]


def rejudged_model(snapshot: Snapshot, vectors: np.ndarray, names: list[str], test: ModelTest) -> ModelVerdict:
    """The model verdict a scan of these samples would give now (:func:`mimicry.scanning.judge_model`)."""
    from mimicry.scanning import judge_model

    return judge_model(snapshot, vectors, names, test.alpha, test.evidence, (), test.sample_range,
                       test.review_alpha)
