"""Model-level verdicts: does a set of samples from one fine-tuned model imitate
a registered artist?

Each sample has, for each artist, a calibrated false-positive rate: the share
of that artist's negatives scoring at least as high, ``(k + 1) / (n + 1)``.
For a non-imitating image that rate is a conformal p-value: the chance that it
is at most ``a`` is ``floor(a (n + 1)) / (n + 1)``, never more than ``a``.

Each sample supports one artist only: the one with its lowest rate (ties: the
higher raw score), so a model imitating Rubens is not also reported as
imitating Titian because its samples are somewhat close to both. For each
artist and each level ``a`` in :data:`LEVEL_MULTIPLES` times the calibrated
rate, the samples supporting the artist at rate ``<= a`` are counted and
tested against ``a`` with a one-sided binomial test (counting only a subset
keeps the test valid); the artist's p-value is the smallest of those,
multiplied by the number of levels (Bonferroni). A single level (the flag
threshold alone) throws away every sample just short of it; several levels
let many moderately close samples count. A model imitates an artist when that
p-value is below the significance level (default 0.001).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import binom

from mimicry.calibration import Calibration

#: Levels of the model-level test, as multiples of the calibrated rate
#: (1%, 2%, 5%, 10%, 20% at the default ``--fpr 0.01``); capped at one half.
LEVEL_MULTIPLES = (1, 2, 5, 10, 20)


def best_artists(raw: np.ndarray, fpr: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Per row, the artist index with the lowest false-positive rate among the
    ``allowed`` ones (all, by default); ties go to the higher raw score. -1 for
    a row with no allowed artist."""
    rates = fpr if allowed is None else np.where(allowed, fpr, np.inf)
    lowest = rates.min(axis=1, keepdims=True)
    best = np.where(rates == lowest, raw, -np.inf).argmax(axis=1)
    return np.where(np.isfinite(lowest[:, 0]), best, -1)


def image_verdicts(raw: np.ndarray, cal: Calibration) -> np.ndarray:
    """Each image's verdict as an artist index, or -1 when no artist is flagged.

    Among the artists whose threshold an image passes, the verdict is the one
    with the lowest false-positive rate; ties go to the higher score.
    """
    return best_artists(raw, cal.fpr_matrix(raw), cal.flags(raw))


def model_test_levels(cal: Calibration) -> list[float]:
    """The false-positive levels the model-level test counts samples at."""
    return sorted({min(m * cal.fpr, 0.5) for m in LEVEL_MULTIPLES})


@dataclass
class ArtistTest:
    """One artist's model-level test on a set of samples."""

    p_value: float  # Bonferroni-corrected over the levels, at most 1
    level: float  # the level that gave the smallest p-value
    hits: np.ndarray  # indices of the samples supporting the artist at or below that level


def artist_tests(raw: np.ndarray, cal: Calibration) -> list[ArtistTest]:
    """The multi-level binomial test (module docstring) for every artist,
    given the samples' raw ``(n, n_artists)`` scores."""
    fpr = cal.fpr_matrix(raw)
    levels = model_test_levels(cal)
    supports = best_artists(raw, fpr)
    own = fpr[np.arange(len(raw)), supports]
    out = []
    for j, neg in enumerate(cal.negatives):
        best = ArtistTest(1.0, levels[0], np.zeros(0, dtype=np.int64))
        for a in levels:
            rate = np.floor(a * (len(neg) + 1)) / (len(neg) + 1)
            hits = np.flatnonzero((supports == j) & (own <= a + 1e-12))
            if rate <= 0 or not len(hits):
                continue
            p = min(1.0, float(binom.sf(len(hits) - 1, len(raw), rate)) * len(levels))
            if p < best.p_value:
                best = ArtistTest(p, a, hits)
        out.append(best)
    return out


def set_statistic(raw: np.ndarray, cal: Calibration, tests: list[ArtistTest] | None = None) -> float:
    """Strength of the strongest artist signal in a set: ``-log10`` of the
    smallest model-level p-value (0 when no artist has any evidence); ties
    broken by the best mean normalised score, scaled to stay below any
    p-value step. ``tests``: :func:`artist_tests` of ``raw``, if already done."""
    tests = artist_tests(raw, cal) if tests is None else tests
    p = min(t.p_value for t in tests)
    z = cal.normalise(raw).mean(axis=0)
    return float(-np.log10(max(p, 1e-300)) + 1e-3 * np.tanh(z.max()))


@dataclass
class ArtistFinding:
    """One artist's share of a model's samples."""

    artist: str
    flagged: int  # samples above the artist's flag threshold
    p_value: float
    level: float  # false-positive level of the strongest binomial test
    supporting: int  # samples at or below that level
    samples: list[str] = field(default_factory=list)  # the supporting samples, strongest first
    nearest_works: list[str] = field(default_factory=list)


@dataclass
class ModelVerdict:
    """Which registered artists a set of samples imitates, at ``alpha``."""

    n_samples: int
    alpha: float
    artists: list[str]  # the verdict: artists imitated (empty: none)
    findings: list[ArtistFinding]  # artists with any evidence (p < 1), by p-value
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)
