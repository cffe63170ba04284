"""Per-artist scores from nearest-neighbour similarities, and the matches of a scan.

An artist's score for a query is the cosine similarity of the query to that
artist's nearest work (max aggregation). On the development set max and the
mean of the two nearest works measured within 0.01 of each other on every
metric (README, "Accuracy"); max keeps the score explainable: it *is* the
similarity of the first piece of evidence shown.

Scoring is exact: every query against every vector of a snapshot (one matrix
product). At the portfolio sizes measured so far (tens of thousands of works)
that is fast and simple; it is the one place to change for an approximate index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mimicry.results import Evidence, Match

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.calibration import Calibration
    from mimicry.store.snapshot import Snapshot


def artist_columns(work_artists: Sequence[str], artists: Sequence[str]) -> list[np.ndarray]:
    """For each artist (in ``artists`` order), the positions of their works."""
    labels = np.asarray(work_artists)
    return [np.flatnonzero(labels == a) for a in artists]


def max_per_artist(sims: np.ndarray, columns: Sequence[np.ndarray]) -> np.ndarray:
    """``(n_queries, n_artists)`` max similarity over each artist's columns
    (-inf for an artist with no works)."""
    out = np.full((sims.shape[0], len(columns)), -np.inf, dtype=np.float32)
    for j, cols in enumerate(columns):
        if len(cols):
            out[:, j] = sims[:, cols].max(axis=1)
    return out


def artist_score_matrix(
    queries: np.ndarray, works: np.ndarray, work_artists: Sequence[str], artists: Sequence[str]
) -> np.ndarray:
    """Exact ``(n_queries, n_artists)`` matrix of max similarity to each artist's works."""
    return max_per_artist(queries @ works.T, artist_columns(work_artists, artists))


@dataclass(frozen=True)
class Scores:
    """Queries against one snapshot: ``sims`` query x work (rows of the
    snapshot), ``raw`` query x artist (columns in ``snapshot.artists`` order)."""

    sims: np.ndarray
    raw: np.ndarray


def score(snapshot: Snapshot, queries: np.ndarray) -> Scores:
    """Every query's similarity to every work and its score for every artist."""
    q = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
    sims = q @ snapshot.vectors.T if len(snapshot.vectors) else np.zeros((len(q), 0), np.float32)
    return Scores(sims, max_per_artist(sims, snapshot.columns))


def nearest(snapshot: Snapshot, sims_row: np.ndarray, artist: int, k: int) -> list[Evidence]:
    """The ``k`` works of artist number ``artist`` nearest to one query, best first."""
    cols = snapshot.columns[artist]
    best = cols[np.argsort(-sims_row[cols], kind="stable")[:k]]
    return [evidence_of(snapshot, int(r), float(sims_row[r])) for r in best]


def evidence_of(snapshot: Snapshot, row: int, similarity: float) -> Evidence:
    work = snapshot.works[int(snapshot.work_ids[row])]
    return Evidence(work.id, work.artist, work.sha256, similarity, work.path)


@dataclass(frozen=True)
class Calibrated:
    """A calibration lined up with a snapshot's artists: ``cal`` covers the
    artists at ``columns`` of the snapshot (all of them unless it is stale)."""

    cal: Calibration
    columns: np.ndarray

    @staticmethod
    def align(snapshot: Snapshot) -> Calibrated | None:
        cal = snapshot.calibration
        if cal is None:
            return None
        here = cal.columns_for(snapshot.artists)
        have = np.flatnonzero(here >= 0)
        if not len(have):
            return None
        return Calibrated(cal.select(here[have]), have)


def image_matches(snapshot: Snapshot, queries: np.ndarray, top: int, evidence: int
                  ) -> list[tuple[list[Match], str | None]]:
    """For each query: its matches (the ``top`` artists by raw score, plus every
    flagged artist, each with ``evidence`` nearest works) and its verdict artist
    on a calibrated snapshot (:func:`mimicry.verdict.image_verdicts`), else None."""
    from mimicry.verdict import image_verdicts

    if not len(queries):
        return []
    scores = score(snapshot, queries)
    raw = scores.raw
    n_artists = raw.shape[1]
    z = np.full(raw.shape, np.nan)
    p = np.full(raw.shape, np.nan)
    flags = np.zeros(raw.shape, dtype=bool)
    calibrated = np.zeros(n_artists, dtype=bool)
    verdict = np.full(len(raw), -1)
    aligned = Calibrated.align(snapshot)
    if aligned is not None:
        sub = raw[:, aligned.columns]
        z[:, aligned.columns] = aligned.cal.normalise(sub)
        p[:, aligned.columns] = aligned.cal.p_values(sub)
        flags[:, aligned.columns] = aligned.cal.flags(sub)
        calibrated[aligned.columns] = True
        v = image_verdicts(sub, aligned.cal)
        verdict = np.where(v >= 0, aligned.columns[np.maximum(v, 0)], -1)
    out = []
    for q in range(len(raw)):
        matches = []
        for j in np.argsort(-raw[q], kind="stable"):  # raw ranks better than z (README, "Accuracy")
            if not np.isfinite(raw[q, j]) or (len(matches) >= top and not flags[q, j]):
                continue
            ev = nearest(snapshot, scores.sims[q], int(j), evidence)
            if calibrated[j]:
                matches.append(Match(snapshot.artists[j], float(raw[q, j]), ev, float(z[q, j]),
                                     bool(flags[q, j]), float(p[q, j])))
            else:
                matches.append(Match(snapshot.artists[j], float(raw[q, j]), ev))
        out.append((matches, snapshot.artists[verdict[q]] if verdict[q] >= 0 else None))
    return out
