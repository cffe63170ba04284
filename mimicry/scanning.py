"""Scanning: images and model samples to results, with their evidence.

:func:`iter_scan` embeds images and yields each one's :class:`ScanResult` in
input order: its matches and verdict (:func:`image_matches`, the rule in
:mod:`mimicry.flagging`). :func:`scan_model` gives the model-level verdict on a
set of samples (:func:`judge_model`, the test in :mod:`mimicry.model_test`).

Promises:
- Reads only: a scan answers from one committed snapshot and never takes the
  write lock; any number of scans run at once.
- Every input gets exactly one result, in input order (the same upload twice
  gets two); an unreadable one gets its reason and no matches.
- The model in hand must be the index's: a scan after another process re-pinned
  the index is :class:`~mimicry.errors.PinMismatchError`, never a mix of vector spaces.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from mimicry import scoring
from mimicry.errors import InputError, NotCalibratedError
from mimicry.flagging import (
    Calibration,
    Judged,
    calibration_of,
    flag_at,
    image_verdicts,
    judge,
    state_warnings,
)
from mimicry.images import ImageBytes, expand_inputs, source_name
from mimicry.results import (
    NOT_CALIBRATED,
    ArtistFinding,
    Match,
    ModelVerdict,
    ScanResult,
    Skipped,
    SupportingSample,
    cannot_flag_text,
    percent_text,
)
from mimicry.scoring import artist_sims, evidence_of, nearest, score

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.engines import ProgressFn
    from mimicry.engines import Engine
    from mimicry.images import ImageSource
    from mimicry.index import StyleIndex
    from mimicry.model_test import ArtistTest, Tier
    from mimicry.store.snapshot import Snapshot

__all__ = ["Calibrated", "image_matches", "iter_scan", "judge_aligned", "judge_model", "query_neighbourhood",
           "scan_model", "scan_warnings"]


@dataclass(frozen=True)
class _Lines:
    """What a calibrated snapshot says of each query and artist (columns: the
    snapshot's artists; NaN where its calibration does not cover the artist)."""

    cal: Calibration | None
    z: np.ndarray  # normalised scores
    corrected: np.ndarray  # hubness-corrected scores
    flag_at: np.ndarray  # the flag threshold on the raw scale
    column: np.ndarray  # per snapshot artist, its calibration column (-1: none)
    verdict: np.ndarray  # per query, its verdict artist (snapshot column), or -1
    image_p: np.ndarray | None  # per query, its image-level p-value


def query_neighbourhood(snapshot: Snapshot, cal: Calibration, queries: np.ndarray) -> np.ndarray:
    """``r(q)`` of queries against the reference the calibration was made with
    (the stored background; none when it was calibrated without one)."""
    return scoring.neighbourhood(queries, snapshot.background if cal.k else None, cal.k)


@dataclass(frozen=True)
class Calibrated:
    """A calibration lined up with a snapshot's artists: ``cal`` covers the
    artists at ``columns`` of the snapshot (all of them unless it is stale)."""

    cal: Calibration
    columns: np.ndarray

    @staticmethod
    def align(snapshot: Snapshot) -> Calibrated | None:
        """The snapshot's calibration lined up with its artists (None when it
        has none, or it covers none of them)."""
        cal = calibration_of(snapshot)
        if cal is None:
            return None
        here = cal.columns_for(snapshot.artists)
        have = np.flatnonzero(here >= 0)
        if not len(have):
            return None
        return Calibrated(cal.select(here[have]), have)


def judge_aligned(snapshot: Snapshot, aligned: Calibrated, raw: np.ndarray, queries: np.ndarray) -> Judged:
    """:func:`judge` against a snapshot's calibration, from raw scores over *all*
    the snapshot's artists: an image whose best artist the calibration does not
    cover (it is stale) is neither flagged nor counted by the model-level test.
    With a calibration covering every artist it equals :func:`judge`."""
    cal = aligned.cal
    j = judge(raw[:, aligned.columns], query_neighbourhood(snapshot, cal, queries), cal)
    covered = np.isin(raw.argmax(axis=1), aligned.columns)
    if covered.all():
        return j
    return Judged(j.raw, j.corrected, j.statistic, j.best, np.where(covered, j.image_p, 1.0),
                  j.flagged & covered)


def scan_warnings(snapshot: Snapshot, cal: Calibration | None) -> list[str]:
    """What every scan result on ``snapshot`` carries: :func:`state_warnings`,
    and, when no image can be flagged at all, why (its ``cal`` is None, or has
    too few null images to reach its rate): the words of the image's verdict."""
    warnings = state_warnings(snapshot)
    if cal is None:
        warnings.append(f"index {NOT_CALIBRATED}, no image is flagged (run `mimicry calibrate`)")
    elif not cal.can_flag:
        warnings.append(f"{cannot_flag_text(cal.promise())} to flag at {percent_text(cal.target_rate)}: "
                        f"no image is flagged (calibrate with more background images)")
    return warnings


def iter_scan(ix: StyleIndex, images: Sequence[ImageSource], top: int, evidence: int, batch_size: int,
              progress: ProgressFn | None, engine: Engine) -> Iterator[ScanResult]:
    """Each image's result in input order, as soon as its stretch is embedded
    (see :meth:`mimicry.index.StyleIndex.scan`)."""
    snap = ix.snapshot()
    ix.check_pin(snap)
    cal = calibration_of(snap)
    warnings = scan_warnings(snap, cal)
    promise = cal.promise() if cal is not None else None
    sources = expand_inputs(images)
    if engine.name != "local" and any(isinstance(x, ImageBytes) for x in sources):
        raise InputError(f"--engine {engine.name} scans files; uploads are scanned locally")
    pending: dict[int, ScanResult] = {}  # by input position: the same upload twice gets two results
    nxt = 0
    for stretch in engine.embed(sources, keys=range(len(sources)), progress=progress, stage="scanning",
                                batch_size=batch_size):
        for pos, err in stretch.failed:
            pending[pos] = ScanResult(source_name(sources[pos]), [], err.reason, warnings=list(warnings))
        for pos, sha, vec, (matches, artist, image_p) in zip(
                stretch.keys, stretch.sha256, stretch.vectors, image_matches(snap, stretch.vectors, top, evidence)):
            pending[pos] = ScanResult(source_name(sources[pos]), matches, None, artist, sha, list(warnings),
                                      image_p, promise, vec)
        while nxt in pending:
            yield pending.pop(nxt)
            nxt += 1
    if nxt != len(sources):  # every input gets a result; anything else is a bug, said loudly
        raise RuntimeError(f"scan lost inputs from position {nxt} of {len(sources)}")


def scan_model(ix: StyleIndex, samples: Sequence[ImageSource], alpha: float, batch_size: int, evidence: int,
               progress: ProgressFn | None) -> ModelVerdict:
    """The model-level verdict on ``samples`` (see :meth:`mimicry.index.StyleIndex.scan_model`)."""
    from mimicry.engines import Embedded

    snap = ix.snapshot()
    if calibration_of(snap) is None:
        raise NotCalibratedError(f"{ix.folder}: scan-model needs a calibrated index; run `mimicry calibrate`")
    ix.check_pin(snap)
    inputs = expand_inputs(samples)
    got = Embedded.gather(ix.engine().embed(inputs, keys=range(len(inputs)), batch_size=batch_size,
                                            progress=progress, stage="samples"), ix.embedder.dim)
    if not got.keys:
        raise InputError("no readable samples in " + ", ".join(source_name(x) for x in samples))
    s = ix.settings
    verdict = judge_model(snap, got.vectors, [source_name(inputs[i]) for i in got.keys], alpha, evidence,
                          got.skipped(), (s.min_samples, s.max_samples), s.review_alpha)
    verdict.inputs[:] = got.keys
    return replace(verdict, vectors=got.vectors)


def _lines(snapshot: Snapshot, raw: np.ndarray, queries: np.ndarray) -> _Lines:
    """:class:`_Lines` of queries from their raw scores over every snapshot artist."""
    n_artists = raw.shape[1]
    z, corrected, line = (np.full(raw.shape, np.nan) for _ in range(3))
    column = np.full(n_artists, -1)
    aligned = Calibrated.align(snapshot)
    if aligned is None:
        return _Lines(None, z, corrected, line, column, np.full(len(raw), -1), None)
    cal = aligned.cal
    judged = judge_aligned(snapshot, aligned, raw, queries)
    z[:, aligned.columns] = cal.normalise(judged.corrected)
    corrected[:, aligned.columns] = judged.corrected
    line[:, aligned.columns] = flag_at(cal, judged.raw, judged.corrected)
    column[aligned.columns] = np.arange(len(aligned.columns))
    v = image_verdicts(judged)
    verdict = np.where(v >= 0, aligned.columns[np.maximum(v, 0)], -1)
    return _Lines(cal, z, corrected, line, column, verdict, judged.image_p)


def image_matches(snapshot: Snapshot, queries: np.ndarray, top: int, evidence: int
                  ) -> list[tuple[list[Match], str | None, float | None]]:
    """For each query: its matches (the ``top`` artists by raw score, each with
    ``evidence`` nearest works), its verdict artist on a calibrated snapshot
    (else None) and its image-level p-value (else None). A match is ``flagged``
    when its artist is the image's verdict; its ``flag_at`` is
    :func:`mimicry.flagging.flag_at`, so the best match passes it exactly
    when the image is flagged."""
    if not len(queries):
        return []
    raw = score(snapshot, queries, need=top).raw
    lines = _lines(snapshot, raw, queries)
    out = []
    for q in range(len(raw)):
        verdict = int(lines.verdict[q])
        out.append((_matches(snapshot, queries[q], raw[q], q, lines, top, evidence),
                    snapshot.artists[verdict] if verdict >= 0 else None,
                    None if lines.image_p is None else float(lines.image_p[q])))
    return out


def _matches(snapshot: Snapshot, query: np.ndarray, raw: np.ndarray, q: int, lines: _Lines, top: int,
             evidence: int) -> list[Match]:
    """Query ``q``'s matches, best raw score first (docs, "Accuracy"): the
    ``top`` artists, and its verdict artist whatever its rank."""
    matches: list[Match] = []
    for j in np.argsort(-raw, kind="stable"):
        if not np.isfinite(raw[j]) or (len(matches) >= top and j != lines.verdict[q]):
            continue
        ev = nearest(snapshot, query, int(j), evidence)
        # The score is the first evidence's similarity: one number, computed once.
        s = ev[0].similarity if ev else float(raw[j])
        col = int(lines.column[j])
        if col < 0 or lines.cal is None:
            matches.append(Match(snapshot.artists[j], float(s), ev))
            continue
        line = float(lines.flag_at[q, j])
        matches.append(Match(snapshot.artists[j], float(s), ev, float(lines.z[q, j]),
                             bool(j == lines.verdict[q]), lines.cal.p_value(col, float(lines.corrected[q, j])),
                             line if np.isfinite(line) else None))
    return matches


def judge_model(snapshot: Snapshot, vectors: np.ndarray, names: Sequence[str], alpha: float,
                evidence: int = 3, skipped: Sequence[Skipped] = (),
                sample_range: tuple[int, int] = (8, 200), review_alpha: float = 0.05) -> ModelVerdict:
    """The model verdict on samples (``vectors``, one row per sample named by
    ``names``) against a calibrated snapshot, at both tiers
    (:func:`mimicry.model_test.judge_set`). Findings list the artists at a
    tier, those with any image-level evidence (p < 1) and the one the maker
    test finds closest, strongest first; each pairs its supporting samples with
    their nearest work of the artist. ``warnings`` say when the sample count
    lies outside ``sample_range``, a tier cannot fire, or the calibration is stale."""
    from mimicry.model_test import REVIEW, judge_set

    aligned = Calibrated.align(snapshot)
    if aligned is None:
        raise NotCalibratedError(f"{snapshot.folder}: a model verdict needs a calibrated index; "
                                 f"run `mimicry calibrate`")
    cal = aligned.cal
    judged = judge_aligned(snapshot, aligned, score(snapshot, vectors, need=1).raw, vectors)
    sj = judge_set(judged, cal, alpha, review_alpha)
    flagged = np.bincount(judged.best[judged.flagged], minlength=len(cal.artists))
    nearest_n = np.bincount(judged.raw.argmax(axis=1), minlength=len(cal.artists))
    shown = {int(j) for j in np.r_[sj.imitates, sj.review]} | {j for j, t in enumerate(sj.tests) if t.p_value < 1}
    if sj.p_makers is not None:
        shown.add(int(sj.p_makers.argmin()))
    tier_at = {int(j): name for name, at in (("review", sj.review), ("imitates", sj.imitates)) for j in at}
    rank = {"imitates": 0, "review": 1}
    order = sorted(shown, key=lambda j: (rank.get(tier_at.get(j), 2), sj.p_tiers[tier_at.get(j, REVIEW)][j],
                                         sj.tests[j].p_value))
    findings = [_finding(snapshot, aligned, judged, sj.tests[j], j, int(flagged[j]), vectors, names, evidence,
                         {"p_makers": None if sj.p_makers is None else float(sj.p_makers[j]),
                          "p_images_makers": None if sj.p_images_vs_makers is None
                          else float(sj.p_images_vs_makers[j]),
                          "p_tiers": {k: float(v[j]) for k, v in sj.p_tiers.items()},
                          "tier": tier_at.get(j), "nearest_samples": int(nearest_n[j])})
                for j in order]
    warnings = state_warnings(snapshot) + _model_warnings(len(names), sample_range, sj.tiers.values())
    return ModelVerdict(len(names), alpha, [cal.artists[j] for j in sj.imitates], findings, list(skipped),
                        warnings, cal.promise(), list(names), review=[cal.artists[j] for j in sj.review],
                        review_alpha=review_alpha, tiers={k: t.to_dict() for k, t in sj.tiers.items()},
                        nearest={cal.artists[j]: int(c) for j, c in enumerate(nearest_n) if c})


def _model_warnings(n: int, sample_range: tuple[int, int], tiers: Iterable[Tier]) -> list[str]:
    """Sentences about a model verdict's footing: the sample count, and tiers that cannot fire."""
    out = []
    lo, hi = sample_range
    many = f"{n} sample{'s' if n != 1 else ''}"
    if n < lo:
        out.append(f"{many}: fewer than the {lo} the verdict is designed for; "
                   f"a model not flagged on so few is not cleared")
    elif n > hi:
        out.append(f"{many}; the test is designed for {lo} to {hi}")
    for t in tiers:
        if not t.resolvable:
            out.append(f"the {t.name} tier cannot fire here: with {t.makers} background makers and "
                       f"{many} no test can reach its alpha {t.alpha:g}")
        elif t.name == "review" and "makers" not in t.rule:
            out.append(f"the calibration has {t.makers} background makers, too few for the maker test: "
                       f"verdicts rest on the image test alone, which treats samples as independent; "
                       f"calibrate with a background of one sub-folder per maker (40 or more)")
    return out


def _finding(snapshot: Snapshot, aligned: Calibrated, judged: Judged, t: ArtistTest, j: int, flagged: int,
             vectors: np.ndarray, names: Sequence[str], evidence: int, extra: dict[str, Any]) -> ArtistFinding:
    """The finding for calibration artist ``j``: its supporting samples (best
    raw score first; with none, the top half of the samples by score for the
    artist, what the maker test averages), each beside its nearest work, and
    the ``evidence`` works nearest to any of them."""
    col = int(aligned.columns[j])
    hits = t.hits if len(t.hits) else np.argsort(-judged.raw[:, j], kind="stable")[:max(1, len(names) // 2)]
    hits = hits[np.argsort(-judged.raw[hits, j], kind="stable")]
    pairs = [SupportingSample(names[i], float(judged.image_p[i]),
                              nearest(snapshot, vectors[i], col, 1)[0], int(i)) for i in hits]
    best_rows = artist_sims(snapshot, vectors[hits], col).max(axis=0)
    order = np.argsort(-best_rows, kind="stable")[:evidence]
    near = [evidence_of(snapshot, int(snapshot.columns[col][i]), float(best_rows[i])) for i in order]
    return ArtistFinding(aligned.cal.artists[j], flagged, t.p_value, t.level, len(t.hits),
                         [names[i] for i in hits], near, pairs, [int(i) for i in hits], **extra)
