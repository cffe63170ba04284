"""Verdicts: which artist, if any, an image imitates (:func:`image_matches`,
:func:`image_verdicts`), and whether a set of samples from one fine-tuned
model imitates a registered artist (:func:`judge_model`).

Each sample has, for each artist, a calibrated p-value: the share of that
artist's negatives scoring at least as high, ``(k + 1) / (n + 1)`` (results
print it as ``fpr``). For a non-imitating image it is a conformal p-value: the
chance that it is at most ``a`` is ``floor(a (n + 1)) / (n + 1)``, never more than ``a``.

Each sample supports one artist only: the one with its lowest p-value (ties: the
higher raw score), so a model imitating Rubens is not also reported as
imitating Titian because its samples are somewhat close to both. For each
artist and each level ``a`` in :data:`LEVEL_MULTIPLES` times the calibration's
target rate, the samples supporting the artist at rate ``<= a`` are counted and
tested against ``a`` with a one-sided binomial test (counting only a subset
keeps the test valid); the artist's p-value is the smallest of those,
multiplied by the number of levels (Bonferroni). A single level (the flag
threshold alone) throws away every sample just short of it; several levels
let many moderately close samples count. A model imitates an artist when that
p-value is below the significance level ``alpha`` (default 0.001): that rule
lives in :func:`imitated` and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mimicry.calibration import Calibration
from mimicry.errors import NotCalibratedError
from mimicry.results import ArtistFinding, Match, ModelVerdict, Skipped, SupportingSample
from mimicry.scoring import evidence_of, nearest, score

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.store.snapshot import Snapshot

__all__ = ["ArtistFinding", "ArtistTest", "Calibrated", "ModelVerdict", "artist_tests", "best_artists",
           "image_matches", "image_verdicts", "imitated", "judge_model", "model_test_levels",
           "set_statistic"]

#: Levels of the model-level test, as multiples of the calibration's target
#: rate (1%, 2%, 5%, 10%, 20% at the default ``--fpr 0.01``); capped at one half.
LEVEL_MULTIPLES = (1, 2, 5, 10, 20)


def best_artists(raw: np.ndarray, p_values: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Per row, the artist index with the lowest p-value among the ``allowed``
    ones (all, by default); ties go to the higher raw score. -1 for a row with
    no allowed artist."""
    rates = p_values if allowed is None else np.where(allowed, p_values, np.inf)
    lowest = rates.min(axis=1, keepdims=True)
    best = np.where(rates == lowest, raw, -np.inf).argmax(axis=1)
    return np.where(np.isfinite(lowest[:, 0]), best, -1)


def image_verdicts(raw: np.ndarray, cal: Calibration) -> np.ndarray:
    """Each image's verdict as an artist index, or -1 when no artist is flagged.

    Among the artists whose threshold an image passes, the verdict is the one
    with the lowest p-value; ties go to the higher score.
    """
    return best_artists(raw, cal.p_values(raw), cal.flags(raw))


def model_test_levels(cal: Calibration) -> list[float]:
    """The p-value levels the model-level test counts samples at."""
    return sorted({min(m * cal.target_rate, 0.5) for m in LEVEL_MULTIPLES})


@dataclass(frozen=True)
class ArtistTest:
    """One artist's model-level test on a set of samples."""

    p_value: float  # Bonferroni-corrected over the levels, at most 1
    level: float  # the level that gave the smallest p-value
    hits: np.ndarray  # indices of the samples supporting the artist at or below that level


def artist_tests(raw: np.ndarray, cal: Calibration) -> list[ArtistTest]:
    """The multi-level binomial test (module docstring) for every artist,
    given the samples' raw ``(n, n_artists)`` scores."""
    from scipy.stats import binom

    p = cal.p_values(raw)
    levels = model_test_levels(cal)
    supports = best_artists(raw, p)
    own = p[np.arange(len(raw)), supports]
    out = []
    for j, neg in enumerate(cal.negatives):
        best = ArtistTest(1.0, levels[0], np.zeros(0, dtype=np.int64))
        for a in levels:
            rate = np.floor(a * (len(neg) + 1)) / (len(neg) + 1)
            hits = np.flatnonzero((supports == j) & (own <= a + 1e-12))
            if rate <= 0 or not len(hits):
                continue
            pv = min(1.0, float(binom.sf(len(hits) - 1, len(raw), rate)) * len(levels))
            if pv < best.p_value:
                best = ArtistTest(pv, a, hits)
        out.append(best)
    return out


def imitated(tests: Sequence[ArtistTest], alpha: float) -> np.ndarray:
    """The verdict rule: indices of the artists whose model-level p-value is
    below ``alpha``, strongest first."""
    p = np.array([t.p_value for t in tests])
    hit = np.flatnonzero(p < alpha)
    return hit[np.argsort(p[hit], kind="stable")]


def set_statistic(raw: np.ndarray, cal: Calibration, tests: list[ArtistTest] | None = None) -> float:
    """Strength of the strongest artist signal in a set: ``-log10`` of the
    smallest model-level p-value (0 when no artist has any evidence); ties
    broken by the best mean normalised score, scaled to stay below any
    p-value step. ``tests``: :func:`artist_tests` of ``raw``, if already done."""
    tests = artist_tests(raw, cal) if tests is None else tests
    p = min(t.p_value for t in tests)
    z = cal.normalise(raw).mean(axis=0)
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
    scores = score(snapshot, vectors)
    raw = scores.raw[:, aligned.columns]
    cal = aligned.cal
    tests = artist_tests(raw, cal)
    p = cal.p_values(raw)
    flagged = cal.flags(raw).sum(axis=0)
    findings = []
    for j in np.argsort([t.p_value for t in tests], kind="stable"):
        t = tests[j]
        if t.p_value >= 1.0:
            continue
        col = int(aligned.columns[j])
        hits = t.hits[np.argsort(-raw[t.hits, j], kind="stable")]
        pairs = [SupportingSample(names[i], float(p[i, j]), nearest(snapshot, scores.sims[i], col, 1)[0])
                 for i in hits]
        best_rows = scores.sims[hits][:, snapshot.columns[col]].max(axis=0)
        order = snapshot.columns[col][np.argsort(-best_rows, kind="stable")[:evidence]]
        near = _evidence_rows(snapshot, order, scores.sims[hits])
        findings.append(ArtistFinding(cal.artists[j], int(flagged[j]), t.p_value, t.level, len(hits),
                                      [names[i] for i in hits], near, pairs))
    verdict = [cal.artists[j] for j in imitated(tests, alpha)]
    warnings = list(snapshot.warnings())
    lo, hi = sample_range
    if not lo <= len(names) <= hi:
        warnings.append(f"{len(names)} samples; the test is designed for {lo} to {hi}")
    return ModelVerdict(len(names), alpha, verdict, findings, list(skipped), warnings)


def _evidence_rows(snapshot: Snapshot, rows: np.ndarray, sims: np.ndarray) -> list:
    """Evidence for snapshot ``rows``, each with its best similarity to any of ``sims``' queries."""
    return [evidence_of(snapshot, int(r), float(sims[:, r].max())) for r in rows]


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
