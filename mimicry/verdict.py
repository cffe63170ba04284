"""Verdicts: which artist, if any, an image imitates (:func:`image_matches`,
:func:`image_verdicts`), and whether a set of samples from one fine-tuned
model imitates a registered artist (:func:`judge_model`).

Each image gets an image-level p-value (:meth:`Calibration.image_p_values`):
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
style, so treat the verdict as evidence for a moderator, not a proof). Several levels let many moderately close
samples count where the flag threshold alone would throw them away. A model
imitates an artist when that p-value is below the significance level
``alpha`` (default 0.001): that rule lives in :func:`imitated` and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mimicry.calibration import Calibration, calibration_of, state_warnings
from mimicry.errors import NotCalibratedError
from mimicry.results import ArtistFinding, Match, ModelVerdict, Skipped, SupportingSample
from mimicry.scoring import artist_sims, evidence_of, nearest, score

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.store.snapshot import Snapshot

__all__ = ["ArtistFinding", "ArtistTest", "Calibrated", "Judged", "ModelVerdict", "artist_tests",
           "image_matches", "image_verdicts", "imitated", "judge", "judge_model", "model_test_levels",
           "query_neighbourhood", "set_statistic"]

#: Levels of the model-level test, as multiples of the calibration's target
#: rate (1%, 2%, 5%, 10%, 20% at the default ``--fpr 0.01``); capped at one half.
LEVEL_MULTIPLES = (1, 2, 5, 10, 20)


@dataclass(frozen=True)
class Judged:
    """Images judged against a calibration (columns: the calibration's artists).

    ``statistic`` and ``best`` are :meth:`Calibration.image_statistic`;
    ``image_p`` the image-level p-values; ``flagged`` whether the image passes
    the flag threshold (then it is flagged as ``best``)."""

    raw: np.ndarray
    corrected: np.ndarray
    statistic: np.ndarray
    best: np.ndarray
    image_p: np.ndarray
    flagged: np.ndarray


def judge(raw: np.ndarray, query_r: np.ndarray, cal: Calibration) -> Judged:
    """Judges images from their raw ``(n, n_artists)`` scores and their
    reference neighbourhoods ``r(q)`` (:func:`mimicry.hubness.neighbourhood`)."""
    corrected = cal.correct(raw, query_r)
    statistic, best = cal.image_statistic(raw, corrected)
    return Judged(raw, corrected, statistic, best, cal.image_p_values(statistic), cal.flagged(statistic))


def query_neighbourhood(snapshot: Snapshot, cal: Calibration, queries: np.ndarray) -> np.ndarray:
    """``r(q)`` of queries against the reference the calibration was made with
    (the stored background; none when it was calibrated without one)."""
    from mimicry.hubness import neighbourhood

    return neighbourhood(queries, snapshot.background if cal.k else None, cal.k)


def judge_aligned(snapshot: Snapshot, aligned: Calibrated, raw: np.ndarray, queries: np.ndarray) -> Judged:
    """:func:`judge` against a snapshot's calibration, from raw scores over *all*
    the snapshot's artists: an image whose best artist the calibration does not
    cover (it is stale) is neither flagged nor counted by the model-level test."""
    cal = aligned.cal
    j = judge(raw[:, aligned.columns], query_neighbourhood(snapshot, cal, queries), cal)
    covered = np.isin(raw.argmax(axis=1), aligned.columns)
    if covered.all():
        return j
    return Judged(j.raw, j.corrected, j.statistic, j.best, np.where(covered, j.image_p, 1.0),
                  j.flagged & covered)


def image_verdicts(judged: Judged) -> np.ndarray:
    """Each image's verdict as an artist index, or -1 when it is not flagged."""
    return np.where(judged.flagged, judged.best, -1)


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
    """The multi-level binomial test (module docstring) for every artist."""
    from scipy.stats import betabinom

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
    tail = betabinom.sf(counts - 1, n, np.maximum(ranks, 1)[None, :], (n_null + 1 - ranks)[None, :])
    p = np.where((counts > 0) & usable[None, :], np.minimum(1.0, tail * len(levels)), 1.0)
    for row, j in enumerate(supported):
        k = int(np.argmin(p[row]))  # the first level with the smallest p-value
        if p[row, k] < 1.0:
            hits = np.flatnonzero((judged.best == j) & at[:, k])
            out[int(j)] = ArtistTest(float(p[row, k]), float(levels[k]), hits)
    return out


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


def judge_model(snapshot: Snapshot, vectors: np.ndarray, names: Sequence[str], alpha: float,
                evidence: int = 3, skipped: Sequence[Skipped] = (),
                sample_range: tuple[int, int] = (8, 200)) -> ModelVerdict:
    """The model-level verdict on samples (``vectors``, one row per sample named
    by ``names``) against a calibrated snapshot. Findings list every artist with
    any evidence (p < 1) by p-value; each pairs its supporting samples with their
    nearest work of the artist. ``warnings`` say when the sample count lies
    outside ``sample_range`` or the calibration is stale."""
    aligned = Calibrated.align(snapshot)
    if aligned is None:
        raise NotCalibratedError(f"{snapshot.folder}: a model verdict needs a calibrated index; "
                                 f"run `mimicry calibrate`")
    scores = score(snapshot, vectors, need=1)
    cal = aligned.cal
    judged = judge_aligned(snapshot, aligned, scores.raw, vectors)
    tests = artist_tests(judged, cal)
    flagged = np.bincount(judged.best[judged.flagged], minlength=len(cal.artists))
    findings = []
    for j in np.argsort([t.p_value for t in tests], kind="stable"):
        t = tests[j]
        if t.p_value >= 1.0:
            continue
        col = int(aligned.columns[j])
        hits = t.hits[np.argsort(-judged.raw[t.hits, j], kind="stable")]
        pairs = [SupportingSample(names[i], float(judged.image_p[i]),
                                  nearest(snapshot, vectors[i], col, 1)[0], int(i)) for i in hits]
        best_rows = artist_sims(snapshot, vectors[hits], col).max(axis=0)
        order = np.argsort(-best_rows, kind="stable")[:evidence]
        near = [evidence_of(snapshot, int(snapshot.columns[col][i]), float(best_rows[i])) for i in order]
        findings.append(ArtistFinding(cal.artists[j], int(flagged[j]), t.p_value, t.level, len(hits),
                                      [names[i] for i in hits], near, pairs, [int(i) for i in hits]))
    verdict = [cal.artists[j] for j in imitated(tests, alpha)]
    warnings = state_warnings(snapshot)
    lo, hi = sample_range
    if not lo <= len(names) <= hi:
        warnings.append(f"{len(names)} samples; the test is designed for {lo} to {hi}")
    return ModelVerdict(len(names), alpha, verdict, findings, list(skipped), warnings, cal.promise(),
                        list(names))


@dataclass(frozen=True)
class Calibrated:
    """A calibration lined up with a snapshot's artists: ``cal`` covers the
    artists at ``columns`` of the snapshot (all of them unless it is stale)."""

    cal: Calibration
    columns: np.ndarray

    @staticmethod
    def align(snapshot: Snapshot) -> Calibrated | None:
        cal = calibration_of(snapshot)
        if cal is None:
            return None
        here = cal.columns_for(snapshot.artists)
        have = np.flatnonzero(here >= 0)
        if not len(have):
            return None
        return Calibrated(cal.select(here[have]), have)


def image_matches(snapshot: Snapshot, queries: np.ndarray, top: int, evidence: int
                  ) -> list[tuple[list[Match], str | None, float | None]]:
    """For each query: its matches (the ``top`` artists by raw score, each with
    ``evidence`` nearest works), its verdict artist on a calibrated snapshot
    (else None) and its image-level p-value (else None). A match is ``flagged``
    when its artist is the image's verdict."""
    if not len(queries):
        return []
    scores = score(snapshot, queries, need=top)
    raw = scores.raw
    n_artists = raw.shape[1]
    z = np.full(raw.shape, np.nan)
    corrected = np.full(raw.shape, np.nan)
    flag_at = np.full(raw.shape, np.nan)
    calibrated = np.zeros(n_artists, dtype=bool)
    verdict = np.full(len(raw), -1)
    image_p: np.ndarray | None = None
    aligned = Calibrated.align(snapshot)
    if aligned is not None:
        cal = aligned.cal
        judged = judge_aligned(snapshot, aligned, raw, queries)
        z[:, aligned.columns] = cal.normalise(judged.corrected)
        corrected[:, aligned.columns] = judged.corrected
        col_of = np.full(n_artists, -1)
        col_of[aligned.columns] = np.arange(len(aligned.columns))
        # corrected = raw - correction, so an image passes where raw > threshold + correction
        flag_at[:, aligned.columns] = cal.flag_threshold + (judged.raw - judged.corrected)
        calibrated[aligned.columns] = True
        v = image_verdicts(judged)
        verdict = np.where(v >= 0, aligned.columns[np.maximum(v, 0)], -1)
        image_p = judged.image_p
    out = []
    for q in range(len(raw)):
        matches = []
        for j in np.argsort(-raw[q], kind="stable"):  # raw ranks best (README, "Accuracy")
            if not np.isfinite(raw[q, j]) or (len(matches) >= top and j != verdict[q]):
                continue
            ev = nearest(snapshot, queries[q], int(j), evidence)
            # The score is the first evidence's similarity: one number, computed once.
            raw[q, j] = ev[0].similarity if ev else raw[q, j]
            if calibrated[j]:
                line = float(flag_at[q, j])
                matches.append(Match(snapshot.artists[j], float(raw[q, j]), ev, float(z[q, j]),
                                     bool(j == verdict[q]), cal.p_value(int(col_of[j]), float(corrected[q, j])),
                                     line if np.isfinite(line) else None))
            else:
                matches.append(Match(snapshot.artists[j], float(raw[q, j]), ev))
        out.append((matches, snapshot.artists[verdict[q]] if verdict[q] >= 0 else None,
                    None if image_p is None else float(image_p[q])))
    return out
