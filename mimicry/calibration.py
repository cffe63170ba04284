"""Per-artist calibration: thresholds with a known false-positive rate.

For each artist the *negatives* are every other artist's works
(leave-one-artist-out, always available) plus an optional background set of
unrelated images. From the artist's raw scores (max cosine) on those negatives:

- ``mu``, ``sigma``: their mean and spread. The normalised score
  ``z = (score - mu) / sigma`` removes hubness (an artist who sits close to
  everything gets a high ``mu``) and makes artists comparable for ranking.
- ``threshold``: the raw score a query must exceed to be flagged; at most
  ``fpr`` of the negatives exceed it.
- ``fpr_matrix(scores)``: the share of negatives scoring at least each score
  (``(k + 1) / (n + 1)``, never 0: with n negatives no rate below 1/(n+1) can
  be claimed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mimicry.scoring import artist_score_matrix


@dataclass
class Calibration:
    """Thresholds and normalisation for each artist, at target rate ``fpr``."""

    artists: list[str]
    mu: np.ndarray
    sigma: np.ndarray
    threshold: np.ndarray
    negatives: list[np.ndarray]  # per artist, sorted raw negative scores
    fpr: float
    generation: int
    n_background: int

    def to_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        lengths = np.array([len(n) for n in self.negatives], dtype=np.int64)
        flat = np.concatenate(self.negatives) if self.negatives else np.zeros(0, np.float32)
        np.savez(buf, artists=np.array(self.artists, dtype=object), mu=self.mu, sigma=self.sigma,
                 threshold=self.threshold, lengths=lengths, negatives=flat,
                 meta=np.array([self.fpr, self.generation, self.n_background], dtype=np.float64))
        return buf.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> Calibration:
        import io

        z = np.load(io.BytesIO(data), allow_pickle=True)
        bounds = np.cumsum(np.r_[0, z["lengths"]])
        negs = [z["negatives"][bounds[i]:bounds[i + 1]] for i in range(len(z["lengths"]))]
        fpr, gen, n_bg = z["meta"].tolist()
        return Calibration(list(z["artists"]), z["mu"], z["sigma"], z["threshold"], negs,
                           float(fpr), int(gen), int(n_bg))

    def normalise(self, scores: np.ndarray) -> np.ndarray:
        """Raw ``(n, n_artists)`` scores (columns in ``artists`` order) to z-scores."""
        return (scores - self.mu[None, :]) / self.sigma[None, :]

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """For raw ``(n, n_artists)`` scores, whether each passes its artist's threshold."""
        return scores > self.threshold[None, :]

    def fpr_matrix(self, scores: np.ndarray) -> np.ndarray:
        """For raw ``(n, n_artists)`` scores, the share of each artist's negatives
        scoring at least as high, ``(k + 1) / (n + 1)``."""
        out = np.empty(scores.shape, dtype=np.float64)
        for j, neg in enumerate(self.negatives):
            k = len(neg) - np.searchsorted(neg, scores[:, j], side="left")
            out[:, j] = (k + 1) / (len(neg) + 1)
        return out


def negative_scores(
    work_vecs: np.ndarray, work_artists: list[str], artists: list[str],
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
    work_vecs: np.ndarray, work_artists: list[str], background: np.ndarray | None = None,
    fpr: float = 0.01, generation: int = 0,
) -> Calibration:
    """Builds a :class:`Calibration` at target false-positive rate ``fpr``."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be between 0 and 1, got {fpr}")
    artists = sorted(set(work_artists))
    negs = negative_scores(work_vecs, work_artists, artists, background)
    mu = np.array([n.mean() if len(n) else 0.0 for n in negs], dtype=np.float32)
    sigma = np.array([max(float(n.std()), 1e-3) if len(n) > 1 else 1.0 for n in negs], dtype=np.float32)
    thr = np.array([_threshold(n, fpr) for n in negs], dtype=np.float32)
    n_bg = 0 if background is None else len(background)
    return Calibration(artists, mu, sigma, thr, negs, fpr, generation, n_bg)


def _threshold(neg: np.ndarray, fpr: float) -> float:
    """The score a query must exceed: at most ``floor(fpr * n)`` of the ``n``
    negatives lie above it, so at most ``fpr`` of the negatives are flagged."""
    if not len(neg):
        return float("inf")
    allowed = int(np.floor(fpr * len(neg)))
    return float(neg[len(neg) - 1 - min(allowed, len(neg) - 1)])
