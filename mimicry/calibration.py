"""Per-artist calibration: thresholds with a known false-positive rate.

Words used here and everywhere inside the package:

- ``target_rate``: what calibration aims for, the share of an artist's
  negatives allowed above the threshold (the user's ``--fpr``; ``fpr`` stays
  an alias of it on :class:`Calibration`).
- ``p_value``: for one image and one artist, the share of that artist's
  negatives scoring at least as high, ``(k + 1) / (n + 1)`` (never 0: with n
  negatives no rate below 1/(n+1) can be claimed). For an image that does not
  imitate the artist it is a conformal p-value. Results print it as ``fpr``
  too, the name users know.

For each artist the *negatives* are every other artist's works
(leave-one-artist-out, always available) plus an optional background set of
unrelated images. From the artist's raw scores (max cosine) on those negatives:

- ``mu``, ``sigma``: their mean and spread; the normalised score
  ``(score - mu) / sigma`` says how unusual a score is for that artist.
- ``threshold``: the raw score a query must exceed to be flagged; at most
  ``target_rate`` of the negatives exceed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mimicry.scoring import artist_score_matrix
from mimicry.settings import check_rate

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.store.snapshot import Snapshot

__all__ = ["Calibration", "calibrate", "calibrate_snapshot", "negative_scores"]


@dataclass(frozen=True)
class Calibration:
    """Thresholds and normalisation for each artist, at ``target_rate``.

    ``generation`` is the index generation it was computed on; an index whose
    vectors moved on since reports it as stale until recalibrated.
    """

    artists: list[str]
    mu: np.ndarray
    sigma: np.ndarray
    threshold: np.ndarray
    negatives: list[np.ndarray]  # per artist, sorted raw negative scores
    target_rate: float
    generation: int
    n_background: int

    @property
    def fpr(self) -> float:
        """Alias of :attr:`target_rate` (the name of the ``--fpr`` flag)."""
        return self.target_rate

    # -- storage: plain arrays only (no pickle) ----------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        lengths = np.array([len(n) for n in self.negatives], dtype=np.int64)
        flat = np.concatenate(self.negatives) if self.negatives else np.zeros(0, np.float32)
        return {
            "artists": np.array(self.artists, dtype=np.str_),
            "mu": self.mu, "sigma": self.sigma, "threshold": self.threshold,
            "lengths": lengths, "negatives": flat.astype(np.float32),
            "meta": np.array([self.target_rate, self.generation, self.n_background], dtype=np.float64),
        }

    @staticmethod
    def from_arrays(z: dict[str, np.ndarray]) -> Calibration:
        bounds = np.cumsum(np.r_[0, z["lengths"]])
        negs = [z["negatives"][bounds[i]:bounds[i + 1]] for i in range(len(z["lengths"]))]
        rate, gen, n_bg = z["meta"].tolist()
        return Calibration([str(a) for a in z["artists"]], z["mu"], z["sigma"], z["threshold"], negs,
                           float(rate), int(gen), int(n_bg))

    def to_dict(self) -> dict[str, Any]:
        """What ``mimicry calibrate --json`` prints."""
        return {
            "fpr": self.target_rate, "n_background": self.n_background, "generation": self.generation,
            "artists": {a: {"threshold": float(t), "mean": float(m), "std": float(sd), "negatives": len(n)}
                        for a, t, m, sd, n in zip(self.artists, self.threshold, self.mu, self.sigma,
                                                  self.negatives)},
        }

    # -- use ------------------------------------------------------------------------
    def columns_for(self, artists: Sequence[str]) -> np.ndarray:
        """For each name in ``artists``, its column here (-1 when not calibrated)."""
        pos = {a: j for j, a in enumerate(self.artists)}
        return np.array([pos.get(a, -1) for a in artists], dtype=np.int64)

    def select(self, columns: np.ndarray) -> Calibration:
        """The calibration of the artists at ``columns`` only, in that order."""
        if len(columns) == len(self.artists) and np.array_equal(columns, np.arange(len(self.artists))):
            return self
        return Calibration([self.artists[j] for j in columns], self.mu[columns], self.sigma[columns],
                           self.threshold[columns], [self.negatives[j] for j in columns],
                           self.target_rate, self.generation, self.n_background)

    def normalise(self, scores: np.ndarray) -> np.ndarray:
        """Raw ``(n, n_artists)`` scores (columns in ``artists`` order) to z-scores."""
        return (scores - self.mu[None, :]) / self.sigma[None, :]

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """For raw ``(n, n_artists)`` scores, whether each passes its artist's threshold."""
        return scores > self.threshold[None, :]

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """For raw ``(n, n_artists)`` scores, the share of each artist's negatives
        scoring at least as high, ``(k + 1) / (n + 1)``."""
        out = np.empty(scores.shape, dtype=np.float64)
        for j, neg in enumerate(self.negatives):
            k = len(neg) - np.searchsorted(neg, scores[:, j], side="left")
            out[:, j] = (k + 1) / (len(neg) + 1)
        return out


def negative_scores(
    work_vecs: np.ndarray, work_artists: Sequence[str], artists: Sequence[str],
    background: np.ndarray | None = None,
) -> list[np.ndarray]:
    """For each artist, raw scores of every other artist's works (and of the
    background images) against that artist."""
    labels = np.asarray(work_artists)
    s = artist_score_matrix(work_vecs, work_vecs, work_artists, artists)
    bg = (artist_score_matrix(background, work_vecs, work_artists, artists)
          if background is not None and len(background) else np.zeros((0, len(artists))))
    out = []
    for j, a in enumerate(artists):
        out.append(np.sort(np.r_[s[labels != a, j], bg[:, j]]).astype(np.float32))
    return out


def calibrate(
    work_vecs: np.ndarray, work_artists: Sequence[str], background: np.ndarray | None = None,
    target_rate: float = 0.01, generation: int = 0,
) -> Calibration:
    """Builds a :class:`Calibration` at ``target_rate`` (InputError outside (0, 1))."""
    check_rate("fpr", target_rate)
    artists = sorted(set(work_artists))
    negs = negative_scores(work_vecs, work_artists, artists, background)
    mu = np.array([n.mean() if len(n) else 0.0 for n in negs], dtype=np.float32)
    sigma = np.array([max(float(n.std()), 1e-3) if len(n) > 1 else 1.0 for n in negs], dtype=np.float32)
    thr = np.array([_threshold(n, target_rate) for n in negs], dtype=np.float32)
    n_bg = 0 if background is None else len(background)
    return Calibration(artists, mu, sigma, thr, negs, target_rate, generation, n_bg)


def calibrate_snapshot(snapshot: Snapshot, target_rate: float) -> Calibration:
    """The calibration of a snapshot's portfolio against its stored background
    (what ``calibrate``, every recalibrating write and ``evaluate`` all run)."""
    from mimicry.errors import InputError

    if len(snapshot.artists) < 2:
        raise InputError(f"{snapshot.folder or 'portfolio'}: calibration needs at least two artists")
    return calibrate(snapshot.vectors, snapshot.row_artist_names, snapshot.background,
                     target_rate=target_rate, generation=snapshot.generation)


def _threshold(neg: np.ndarray, target_rate: float) -> float:
    """The score a query must exceed: at most ``floor(target_rate * n)`` of the
    ``n`` negatives lie above it, so at most ``target_rate`` of them are flagged."""
    if not len(neg):
        return float("inf")
    allowed = int(np.floor(target_rate * len(neg)))
    return float(neg[len(neg) - 1 - min(allowed, len(neg) - 1)])
