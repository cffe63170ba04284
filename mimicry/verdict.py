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


def null_rates(cal: Calibration) -> np.ndarray:
    """Per-artist chance that a non-imitating image is flagged: the share of the
    artist's negatives above its threshold, never below ``1 / (n + 1)``."""
    rates = []
    for j, neg in enumerate(cal.negatives):
        above = int((neg > cal.threshold[j]).sum())
        rates.append(max(above, 1) / (len(neg) + 1) if len(neg) else 1.0)
    return np.asarray(rates)


def sample_votes(raw: np.ndarray, cal: Calibration) -> np.ndarray:
    """Each sample's vote: the index of its image-level verdict artist (the
    flagged artist with the highest score), or -1 when none is flagged."""
    flags = raw > cal.threshold[None, :]
    z = np.where(flags, raw, -np.inf)
    return np.where(flags.any(axis=1), z.argmax(axis=1), -1)


def binomial_pvalues(raw: np.ndarray, cal: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """(vote counts, p-values) per artist for a set of samples' raw scores.

    A sample counts for an artist only when that artist is its image-level
    verdict, so one sample never counts for two artists; the null rate (the
    chance of a flag for that artist) bounds the chance of such a vote."""
    votes = sample_votes(raw, cal)
    flagged = np.array([(votes == j).sum() for j in range(raw.shape[1])])
    p = binom.sf(flagged - 1, raw.shape[0], null_rates(cal))
    return flagged, np.where(flagged > 0, p, 1.0)


def set_statistic(raw: np.ndarray, cal: Calibration) -> float:
    """Strength of the strongest artist signal in a set: ``-log10`` of the
    smallest binomial p-value (0 when nothing is flagged); ties broken by the
    best mean normalised score, scaled to stay below one p-value step."""
    _, p = binomial_pvalues(raw, cal)
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
