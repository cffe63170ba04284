"""The model verdict: whether a set of samples from one fine-tuned model
imitates a registered artist, at two tiers (``imitates``, ``review``) whose
rule lives in :func:`judge_set` and :func:`tier_of` and nowhere else. Below:
the image test, one of the two tests behind them (the other is
:mod:`mimicry.maker_test`).

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
would throw them away. :func:`imitated` lists the artists whose p-value (of
this test, or of a tier) is below a level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.flagging import Calibration, Judged
    from mimicry.maker_test import MakerSet

__all__ = ["IMITATES", "LEVEL_MULTIPLES", "REVIEW", "ArtistTest", "SetJudgement", "Tier", "artist_tests",
           "beta_binomial_tail", "image_strength", "image_test_p", "images_floor", "imitated", "judge_set", "model_test_levels", "set_statistic",
           "tier_of", "tier_p_values"]

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


def _level_p_values(best: np.ndarray, image_p: np.ndarray, cal: Calibration,
                    tails: dict[int, np.ndarray] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The test's p-value at every level, for each artist some sample supports:
    (those artists, the sample x level mask of samples at each level, their
    artist x level p-values, the levels). ``tails``: a memo of each sample
    count's Beta-binomial tails, kept by the caller."""
    levels = np.array(model_test_levels(cal))
    ranks = np.floor(levels * (cal.n_null + 1) + 1e-9)  # l: a sample is at level a when p <= l / (n_null + 1)
    n = len(best)
    at = image_p[:, None] <= levels[None, :] + 1e-12  # sample x level
    supported, row = np.unique(best, return_inverse=True)  # artists no sample supports keep p = 1
    if n == 0 or not (ranks >= 1).any():
        return supported, at, np.ones((len(supported), len(levels))), levels
    counts = np.zeros((len(supported), len(levels)), dtype=np.int64)  # artist x level
    np.add.at(counts, row.reshape(-1), at.astype(np.int64))
    # Over the draw of the null images, the share of unrelated images at level a is
    # Beta(l, n_null + 1 - l); the count of n samples at that level is Beta-binomial.
    tails = {} if tails is None else tails
    if n not in tails:  # [level, count]: P(X >= count), every count 0..n
        tails[n] = beta_binomial_tail(np.tile(np.arange(n + 1)[:, None], (1, len(levels))), n,
                                      np.maximum(ranks, 1), cal.n_null + 1 - ranks).T
    tail = tails[n][np.arange(len(levels))[None, :], counts]
    p = np.where((counts > 0) & (ranks >= 1)[None, :], np.minimum(1.0, tail * len(levels)), 1.0)
    return supported, at, p, levels


def artist_tests(judged: Judged, cal: Calibration) -> list[ArtistTest]:
    """The multi-level Beta-binomial test (module docstring) for every artist
    (in ``cal.artists`` order); an artist no sample supports gets p = 1."""
    supported, at, p, levels = _level_p_values(judged.best, judged.image_p, cal)
    out = [ArtistTest(1.0, float(levels[0]), np.zeros(0, dtype=np.int64))] * len(cal.artists)
    for row, j in enumerate(supported):
        k = int(np.argmin(p[row]))  # the first level with the smallest p-value
        if p[row, k] < 1.0:
            hits = np.flatnonzero((judged.best == j) & at[:, k])
            out[int(j)] = ArtistTest(float(p[row, k]), float(levels[k]), hits)
    return out


def image_test_p(best: np.ndarray, image_p: np.ndarray, n_artists: int, cal: Calibration,
                 tails: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Per artist, the p-value :func:`artist_tests` gives samples with these best
    artists and image-level p-values (without the supporting samples).
    ``tails``: a memo of each sample count's Beta-binomial tails, kept by the caller."""
    supported, _, p, _ = _level_p_values(best, image_p, cal, tails)
    out = np.ones(n_artists)
    out[supported] = p.min(axis=1)
    return out


def image_strength(cal: Calibration) -> Callable[[MakerSet], np.ndarray]:
    """The maker test's ``images`` statistic at ``cal``: ``-log10`` of :func:`image_test_p`."""
    tails: dict[int, np.ndarray] = {}

    def strength(x: MakerSet) -> np.ndarray:
        return -np.log10(np.maximum(image_test_p(x.best, x.image_p, x.z.shape[1], cal, tails), 1e-300))
    return strength


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


def imitated(tests: Sequence[ArtistTest] | np.ndarray, alpha: float) -> np.ndarray:
    """The verdict rule: indices of the artists whose p-value (an
    :class:`ArtistTest`'s, or a tier's from :func:`judge_set`) is below
    ``alpha``, strongest first."""
    p = np.asarray(tests, dtype=float) if isinstance(tests, np.ndarray) else np.array([t.p_value for t in tests])
    hit = np.flatnonzero(p < alpha)
    return hit[np.argsort(p[hit], kind="stable")]


def set_statistic(judged: Judged, cal: Calibration, p_values: np.ndarray | None = None) -> float:
    """Strength of the strongest artist signal in a set: ``-log10`` of the
    smallest p-value over artists (``p_values``: a tier's, from :func:`judge_set`;
    default: the image-level test's), 0 when no artist has any evidence; ties
    broken by the best mean normalised score, scaled to stay below any p-value step."""
    p = np.array([t.p_value for t in artist_tests(judged, cal)]) if p_values is None else p_values
    z = cal.normalise(judged.corrected).mean(axis=0)
    return float(-np.log10(max(float(np.min(p)), 1e-300)) + 1e-3 * np.tanh(z.max()))


# -- the verdict's two tiers: the image-level test above and the maker test -------
IMITATES, REVIEW = "imitates", "review"


@dataclass(frozen=True)
class Tier:
    """One tier of a model verdict (``imitates``: act; ``review``: send to a
    person with the evidence) and the rule that backs it (:func:`tier_of`):
    ``images`` (the image-level test above), ``makers`` (:mod:`mimicry.maker_test`),
    ``images or makers`` or ``images and makers``. A tier with no rule can never
    fire (not *resolvable*); it is *certified* with at least ``ceil(3 / l)``
    makers, ``l = review_alpha / 2`` the level both tiers use the makers at (120)."""

    name: str
    alpha: float
    makers: int
    rule: str  # "" when not resolvable
    certified: bool

    @property
    def resolvable(self) -> bool:
        return bool(self.rule)

    @property
    def backed_by(self) -> list[str]:
        return [t for t in ("images", "makers") if t in self.rule]

    def to_dict(self) -> dict[str, object]:
        return {"alpha": self.alpha, "makers": self.makers, "resolvable": self.resolvable,
                "certified": self.certified, "rule": self.rule, "backed_by": self.backed_by}


def images_floor(n: int, cal: Calibration) -> float:
    """The smallest p-value the image-level test can give ``n`` samples: all of
    them supporting one artist at the level where that is least likely."""
    levels = np.array(model_test_levels(cal))
    ranks = np.floor(levels * (cal.n_null + 1) + 1e-9)
    usable = ranks >= 1
    if n < 1 or not usable.any():
        return 1.0
    tail = beta_binomial_tail(np.full((1, usable.sum()), n), n, ranks[usable], cal.n_null + 1 - ranks[usable])
    return float(min(1.0, tail.min() * len(levels)))


def tier_of(name: str, alpha: float, cal: Calibration, n: int, review_alpha: float) -> Tier:
    """The rule of the tier at ``alpha`` for ``n`` samples. ``p_i``: the image
    test's p-value (:func:`artist_tests`, valid for independent samples);
    ``q_i``, ``q_m``: the maker test's, of its ``images`` and ``makers``
    statistics (:mod:`mimicry.maker_test`, valid against ``M`` makers, floor
    ``1 / (M + 1)``).

    - ``review``: ``images or makers``, ``2 min(q_i, q_m)`` (Bonferroni), when
      the makers can reach ``alpha / 2``; else ``images``, ``p_i`` alone (no
      makers to judge coherent sets against: valid for independent samples only).
    - ``imitates``: ``images and makers``, ``max(p_i, q_m 2 alpha / review_alpha)``:
      the image test at ``alpha`` *and* the maker test's ``makers`` statistic at
      the level it holds in the review tier agree, when the makers can reach
      that level; else
      ``images``, ``p_i`` alone. Its rate is at most ``alpha`` for independent
      samples, and at most ``review_alpha / 2`` for a coherent unregistered
      style (a null of a few hundred makers cannot resolve 0.001).

    The rule depends on ``n``, the alphas and the calibration, never on the
    samples. A tier with no test that can reach its alpha has no rule.
    """
    makers = 0 if cal.makers is None else cal.makers.makers
    floor = images_floor(n, cal)
    reach = makers > 0 and 1.0 / (makers + 1) < review_alpha / 2
    if name == IMITATES:
        rule = ("images and makers" if reach else "images") if floor < alpha else ""
    else:
        rule = "images or makers" if reach else "images" if floor < alpha else ""
    return Tier(name, alpha, makers, rule, makers >= math.ceil(3 / (review_alpha / 2) - 1e-9))


def tier_p_values(tier: Tier, p_images: np.ndarray, q: np.ndarray | None, review_alpha: float) -> np.ndarray:
    """Each artist's p-value at ``tier`` (its rule, :func:`tier_of`); ``q``: the
    maker test's p-values, one row per statistic (``makers``, ``images``); 1 when
    the tier has no rule."""
    if tier.rule == "images":
        return p_images
    if tier.rule == "images or makers":
        return np.minimum(1.0, 2 * np.minimum(q[0], q[1]))
    if tier.rule == "images and makers":
        return np.maximum(p_images, q[0] * 2 * tier.alpha / review_alpha)  # q[0]: the makers statistic
    return np.ones(len(p_images))


@dataclass(frozen=True)
class SetJudgement:
    """A set of samples judged at both tiers (columns: the calibration's artists)."""

    tests: list[ArtistTest]  # the image-level test, per artist
    p_makers: np.ndarray | None  # the maker test's ``makers`` statistic, per artist (None: no makers)
    p_images_vs_makers: np.ndarray | None  # its ``images`` statistic (the image test judged against makers)
    tiers: dict[str, Tier]
    p_tiers: dict[str, np.ndarray]  # per tier, each artist's p-value
    imitates: np.ndarray  # artists at the imitates tier, strongest first
    review: np.ndarray  # artists at the review tier and not at imitates, strongest first


def judge_set(judged: Judged, cal: Calibration, alpha: float, review_alpha: float) -> SetJudgement:
    """The model verdict's rule, in one place: each tier's p-value per artist
    (:func:`tier_of`) and the artists below its alpha. As each sample supports
    only its best artist in the image test, the maker test's ``makers``
    statistic supports only the set's best artist (the highest top-half mean):
    a model imitating one artist is not sent to review for every artist its
    samples are nearer than unregistered makers' works are."""
    from mimicry.maker_test import MakerSet, maker_p_values, top_half_mean

    tests = artist_tests(judged, cal)
    p_img = np.array([t.p_value for t in tests])
    x = MakerSet(cal.normalise(judged.corrected), judged.best, judged.image_p)
    q = None if cal.makers is None else maker_p_values(x, cal.makers, image_strength(cal))
    if q is not None:
        q[0, np.arange(q.shape[1]) != int(top_half_mean(x.z).argmax())] = 1.0
    tiers = {name: tier_of(name, a, cal, len(judged.raw), review_alpha)
             for name, a in ((IMITATES, alpha), (REVIEW, review_alpha))}
    p_tiers = {name: tier_p_values(t, p_img, q, review_alpha) for name, t in tiers.items()}
    top = imitated(p_tiers[IMITATES], alpha)
    review = imitated(p_tiers[REVIEW], review_alpha)
    return SetJudgement(tests, None if q is None else q[0], None if q is None else q[1], tiers, p_tiers, top,
                        review[~np.isin(review, top)])
