"""The image-flag rule, in one place: which artist, if any, one image is flagged as.

How a flag is decided: the image's best artist is the one with the highest raw
score (the first evidence shown); its *statistic* is that artist's
hubness-corrected score (:func:`scan_statistic`, :mod:`mimicry.hubness`). The
image is flagged as that artist when the statistic exceeds the calibration's
``flag_threshold`` (:func:`flag_threshold`), set on the *null images* so that
at most ``floor(A (n + 1)) - 1`` of the ``n`` lie above it: for a new image
exchangeable with them, the chance of a flag is at most ``A``.

The null images' statistics (:func:`null_statistic`) are computed by the very
function a scan is judged on (:func:`scan_statistic`), chunk by chunk: a null
image scanned as a query, with the same reference neighbourhood ``r(q)``, gets
exactly its null statistic. The threshold and the statistic cannot drift apart.

An image's ``image_p_value`` (:func:`image_p_values`) is the share of the null
images whose statistic is at least its own, ``(k + 1) / (n + 1)``: a conformal
p-value for "this image is by nobody registered", whatever the registry's size.
:func:`flag_at` puts the threshold back on the raw scale, the line a report
draws on the score bar: an image passes it exactly when it is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mimicry import hubness
from mimicry.scoring import artist_max_chunks

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.calibration import Calibration
    from mimicry.store.snapshot import Snapshot

__all__ = ["Calibrated", "Judged", "flag_at", "flag_threshold", "flagged", "image_p_values",
           "image_statistic", "image_verdicts", "judge", "judge_aligned", "null_statistic",
           "query_neighbourhood", "scan_statistic"]


# -- the statistic -------------------------------------------------------------------
def image_statistic(raw: np.ndarray, corrected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, best artist) per image: the raw-best artist and its corrected score."""
    best = raw.argmax(axis=1)
    return corrected[np.arange(len(raw)), best], best


def scan_statistic(raw: np.ndarray, query_r: np.ndarray, artist_r: np.ndarray, weight: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corrected scores, statistic, best artist) of images from their raw
    ``(n, n_artists)`` scores, their reference neighbourhoods ``r(q)`` and the
    artists' ``r(a)``: what every scanned and every null image is judged on."""
    corrected = hubness.correct(raw, query_r, artist_r, weight)
    statistic, best = image_statistic(raw, corrected)
    return corrected, statistic, best


def null_statistic(queries: np.ndarray, works: np.ndarray, columns: Sequence[np.ndarray],
                   query_r: np.ndarray, artist_r: np.ndarray, weight: float,
                   exclude: np.ndarray | None = None) -> np.ndarray:
    """:func:`scan_statistic` of each of ``queries`` (the null images, in their
    order) against every artist's works, scored exactly in chunks so memory
    never holds a query x artist matrix; ``exclude[i]``: an artist query ``i``
    is never scored for (its own, when the null images are the portfolio)."""
    out = np.empty(len(queries), dtype=np.float32)
    for rows, raw in artist_max_chunks(queries, works, columns):
        if exclude is not None:
            raw[np.arange(len(raw)), exclude[rows]] = -np.inf
        out[rows] = scan_statistic(raw, query_r[rows], artist_r, weight)[1]
    return out


# -- the threshold and what it says --------------------------------------------------
def flag_threshold(null: np.ndarray, target_rate: float) -> float:
    """The statistic a new image must exceed: at most ``floor(A (n + 1)) - 1`` of
    the ``n`` sorted null statistics lie above it, so a new exchangeable image is
    flagged with probability at most ``A``. With fewer than ``1/A - 1`` null
    images no threshold keeps that promise, and nothing is flagged (infinity)."""
    rank = int(math.floor(target_rate * (len(null) + 1) + 1e-9))
    if rank < 1:
        return float("inf")
    return float(null[len(null) - rank])


def flagged(cal: Calibration, statistic: np.ndarray) -> np.ndarray:
    """Whether each image statistic passes the calibration's flag threshold."""
    return statistic > cal.flag_threshold


def image_p_values(cal: Calibration, statistic: np.ndarray) -> np.ndarray:
    """The share of null images whose statistic is at least each one's, ``(k + 1) / (n + 1)``."""
    k = len(cal.null) - np.searchsorted(cal.null, statistic, side="left")
    return (k + 1) / (len(cal.null) + 1)


def flag_at(cal: Calibration, raw: np.ndarray, corrected: np.ndarray) -> np.ndarray:
    """The flag threshold on the raw scale, per image and artist: the raw score
    at which the image would be flagged as that artist, were the artist its
    best (``corrected = raw - correction``, so a statistic passes the threshold
    where the raw score passes threshold + correction). Infinite when the
    calibration cannot flag; NaN for an artist left unscored (raw -inf)."""
    with np.errstate(invalid="ignore"):
        return cal.flag_threshold + (raw - corrected)


# -- judging images ------------------------------------------------------------------
@dataclass(frozen=True)
class Judged:
    """Images judged against a calibration (columns: the calibration's artists).

    ``statistic`` and ``best`` are :func:`scan_statistic`'s; ``image_p`` the
    image-level p-values; ``flagged`` whether the image passes the flag
    threshold (then it is flagged as ``best``)."""

    raw: np.ndarray
    corrected: np.ndarray
    statistic: np.ndarray
    best: np.ndarray
    image_p: np.ndarray
    flagged: np.ndarray

    def subset(self, rows: np.ndarray) -> Judged:
        """The judgement of the images at ``rows`` only."""
        return Judged(self.raw[rows], self.corrected[rows], self.statistic[rows], self.best[rows],
                      self.image_p[rows], self.flagged[rows])


def judge(raw: np.ndarray, query_r: np.ndarray, cal: Calibration) -> Judged:
    """Judges images from their raw ``(n, n_artists)`` scores and their
    reference neighbourhoods ``r(q)`` (:func:`mimicry.hubness.neighbourhood`)."""
    corrected, statistic, best = scan_statistic(raw, query_r, cal.artist_r, cal.weight)
    return Judged(raw, corrected, statistic, best, image_p_values(cal, statistic), flagged(cal, statistic))


def image_verdicts(judged: Judged) -> np.ndarray:
    """Each image's verdict as an artist index, or -1 when it is not flagged."""
    return np.where(judged.flagged, judged.best, -1)


def query_neighbourhood(snapshot: Snapshot, cal: Calibration, queries: np.ndarray) -> np.ndarray:
    """``r(q)`` of queries against the reference the calibration was made with
    (the stored background; none when it was calibrated without one)."""
    return hubness.neighbourhood(queries, snapshot.background if cal.k else None, cal.k)


@dataclass(frozen=True)
class Calibrated:
    """A calibration lined up with a snapshot's artists: ``cal`` covers the
    artists at ``columns`` of the snapshot (all of them unless it is stale)."""

    cal: Calibration
    columns: np.ndarray

    @staticmethod
    def align(snapshot: Snapshot) -> Calibrated | None:
        """The snapshot's calibration lined up with its artists (None when it
        has none, or it covers none of them)."""
        from mimicry.calibration import calibration_of  # calibration imports this module

        cal = calibration_of(snapshot)
        if cal is None:
            return None
        here = cal.columns_for(snapshot.artists)
        have = np.flatnonzero(here >= 0)
        if not len(have):
            return None
        return Calibrated(cal.select(here[have]), have)


def judge_aligned(snapshot: Snapshot, aligned: Calibrated, raw: np.ndarray, queries: np.ndarray) -> Judged:
    """:func:`judge` against a snapshot's calibration, from raw scores over *all*
    the snapshot's artists: an image whose best artist the calibration does not
    cover (it is stale) is neither flagged nor counted by the model-level test.
    With a calibration covering every artist it equals :func:`judge`."""
    cal = aligned.cal
    j = judge(raw[:, aligned.columns], query_neighbourhood(snapshot, cal, queries), cal)
    covered = np.isin(raw.argmax(axis=1), aligned.columns)
    if covered.all():
        return j
    return Judged(j.raw, j.corrected, j.statistic, j.best, np.where(covered, j.image_p, 1.0),
                  j.flagged & covered)
