"""Model-level verdicts: does a set of samples from one fine-tuned model imitate
a registered artist?

For each artist, count the samples flagged for that artist at its calibrated
threshold, and test that count against the artist's calibrated per-image
false-positive rate with a one-sided binomial test. A model imitates an artist
when that p-value is below the significance level (default 0.001).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import binom

from mimicry.calibration import Calibration


def image_verdicts(raw: np.ndarray, cal: Calibration) -> np.ndarray:
    """Each image's verdict as an artist index, or -1 when no artist is flagged.

    Among the artists whose threshold an image passes, the verdict is the one
    with the lowest false-positive rate; ties go to the higher score.
    """
    flags = raw > cal.threshold[None, :]
    fpr = cal.fpr_matrix(raw)
    out = np.full(len(raw), -1, dtype=np.int64)
    for q in np.flatnonzero(flags.any(axis=1)):
        cand = np.flatnonzero(flags[q])
        out[q] = cand[np.lexsort((-raw[q, cand], fpr[q, cand]))[0]]
    return out


def binomial_pvalues(votes: np.ndarray, cal: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """(vote counts, p-values) per artist for a set of samples' image verdicts.

    A sample counts for an artist only when that artist is its image-level
    verdict (:func:`image_verdicts`), so one sample never counts for two
    artists; the artist's null rate (the chance of a flag) bounds the chance
    of such a vote."""
    counts = np.bincount(votes[votes >= 0], minlength=len(cal.artists))
    p = binom.sf(counts - 1, len(votes), cal.null_rate)
    return counts, np.where(counts > 0, p, 1.0)


def set_statistic(raw: np.ndarray, cal: Calibration) -> float:
    """Strength of the strongest artist signal in a set: ``-log10`` of the
    smallest binomial p-value (0 when nothing is flagged); ties broken by the
    best mean normalised score, scaled to stay below one p-value step."""
    _, p = binomial_pvalues(image_verdicts(raw, cal), cal)
    z = cal.normalise(raw).mean(axis=0)
    return float(-np.log10(max(p.min(), 1e-300)) + 1e-3 * np.tanh(z.max()))


@dataclass
class ArtistFinding:
    """One artist's share of a model's samples."""

    artist: str
    flagged: int
    p_value: float
    samples: list[str] = field(default_factory=list)  # flagged samples, strongest first
    nearest_works: list[str] = field(default_factory=list)


@dataclass
class ModelVerdict:
    """Which registered artists a set of samples imitates, at ``alpha``."""

    n_samples: int
    alpha: float
    artists: list[str]  # the verdict: artists imitated (empty: none)
    findings: list[ArtistFinding]  # artists with at least one flagged sample, by p-value
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)
