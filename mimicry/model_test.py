"""The model-level test: whether a set of samples from one fine-tuned model
imitates a registered artist.

Each sample has an image-level p-value (:func:`mimicry.flagging.image_p_values`):
the share of the null images (art by nobody registered) whose statistic is at
least its own. For an image by nobody registered it is a conformal p-value: the
chance that it is at most ``a`` is at most ``a``, however many artists are
registered.

Each sample supports one artist only: its best (raw-highest) artist, so a model
imitating Rubens is not also reported as imitating Titian because its samples
are somewhat close to both. For each artist and each level ``a`` in
:data:`LEVEL_MULTIPLES` times the calibration's target rate, the samples
supporting the artist with image-level p-value ``<= a`` are counted and tested
with a one-sided test; the artist's p-value is the smallest of those,
multiplied by the number of levels (Bonferroni). The count's null law is
Beta-binomial, not binomial: all samples are judged against the same null
images, whose realised rate at level ``a`` is itself random (Beta(l, n + 1 - l),
``l = floor(a (n + 1))``). Under the null the samples counted for *all* artists
together follow that law, so one artist's count is bounded by it too: the test
needs no correction for the number of artists, and the share of unrelated
models given a verdict stays below ``alpha`` at any registry size, as long as
a model's samples are independent draws (samples of one model share its
style, so treat the verdict as evidence for a moderator, not a proof). Several
levels let many moderately close samples count where the flag threshold alone
would throw them away. A model imitates an artist when that p-value is below
the significance level ``alpha`` (``Settings.alpha``, default 0.001): that
rule lives in :func:`imitated` and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.flagging import Calibration, Judged

__all__ = ["LEVEL_MULTIPLES", "ArtistTest", "artist_tests", "beta_binomial_tail", "imitated", "model_test_levels",
           "set_statistic"]

#: Levels of the model-level test, as multiples of the calibration's target
#: rate (1%, 2%, 5%, 10%, 20% at the default ``--fpr 0.01``); capped at one half.
LEVEL_MULTIPLES = (1, 2, 5, 10, 20)


def model_test_levels(cal: Calibration) -> list[float]:
    """The image-level p-value levels the model-level test counts samples at."""
    return sorted({min(m * cal.target_rate, 0.5) for m in LEVEL_MULTIPLES})


@dataclass(frozen=True)
class ArtistTest:
    """One artist's model-level test on a set of samples."""

    p_value: float  # Bonferroni-corrected over the levels, at most 1
    level: float  # the level that gave the smallest p-value
    hits: np.ndarray  # indices of the samples supporting the artist at or below that level


def artist_tests(judged: Judged, cal: Calibration) -> list[ArtistTest]:
    """The multi-level Beta-binomial test (module docstring) for every artist
    (in ``cal.artists`` order); an artist no sample supports gets p = 1."""
    levels = np.array(model_test_levels(cal))
    n_null = cal.n_null
    n = len(judged.raw)
    ranks = np.floor(levels * (n_null + 1) + 1e-9)  # l: a sample is at level a when p <= l / (n_null + 1)
    none = ArtistTest(1.0, float(levels[0]), np.zeros(0, dtype=np.int64))
    out = [none] * len(cal.artists)
    supported = np.unique(judged.best)  # artists no sample supports keep p = 1
    if not len(supported) or n == 0:
        return out
    at = judged.image_p[:, None] <= levels[None, :] + 1e-12  # sample x level
    counts = np.stack([at[judged.best == j].sum(axis=0) for j in supported])  # artist x level
    # Over the draw of the null images, the share of unrelated images at level a is
    # Beta(l, n_null + 1 - l); the count of n samples at that level is Beta-binomial.
    usable = ranks >= 1
    tail = beta_binomial_tail(counts, n, np.maximum(ranks, 1), n_null + 1 - ranks)
    p = np.where((counts > 0) & usable[None, :], np.minimum(1.0, tail * len(levels)), 1.0)
    for row, j in enumerate(supported):
        k = int(np.argmin(p[row]))  # the first level with the smallest p-value
        if p[row, k] < 1.0:
            hits = np.flatnonzero((judged.best == j) & at[:, k])
            out[int(j)] = ArtistTest(float(p[row, k]), float(levels[k]), hits)
    return out


def beta_binomial_tail(counts: np.ndarray, n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``P(X >= counts[:, i])`` for ``X ~ BetaBinomial(n, a[i], b[i])``, one column
    per level; ``counts`` are integers in ``0..n``. Summed from the top in log
    space, so a tail of 1e-200 keeps its digits (``1 - cdf`` loses every tail
    below about 1e-16 to 0 and all but a few digits of those near it)."""
    from scipy.special import betaln, gammaln

    j = np.arange(n + 1)
    log_pmf = (gammaln(n + 1) - gammaln(j + 1) - gammaln(n - j + 1))[None, :] \
        + betaln(j[None, :] + a[:, None], (n - j)[None, :] + b[:, None]) - betaln(a, b)[:, None]
    log_tail = np.logaddexp.accumulate(log_pmf[:, ::-1], axis=1)[:, ::-1]  # [level, m] = log P(X >= m)
    return np.exp(log_tail[np.arange(len(a))[None, :], counts])


def imitated(tests: Sequence[ArtistTest], alpha: float) -> np.ndarray:
    """The verdict rule: indices of the artists whose model-level p-value is
    below ``alpha``, strongest first."""
    p = np.array([t.p_value for t in tests])
    hit = np.flatnonzero(p < alpha)
    return hit[np.argsort(p[hit], kind="stable")]


def set_statistic(judged: Judged, cal: Calibration, tests: list[ArtistTest] | None = None) -> float:
    """Strength of the strongest artist signal in a set: ``-log10`` of the
    smallest model-level p-value (0 when no artist has any evidence); ties
    broken by the best mean normalised score, scaled to stay below any
    p-value step. ``tests``: :func:`artist_tests` of ``judged``, if already done."""
    tests = artist_tests(judged, cal) if tests is None else tests
    p = min(t.p_value for t in tests)
    z = cal.normalise(judged.corrected).mean(axis=0)
    return float(-np.log10(max(p, 1e-300)) + 1e-3 * np.tanh(z.max()))
