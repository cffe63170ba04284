"""Ingestion: what enters an index. Portfolios from folders, incremental by
content hash (:func:`sync`, :func:`index_works`); a re-embedding under the
current recipe (:func:`rebuild`, :func:`rebuild_index`); a background and the
calibration fitted on it (:func:`calibrate_index`), refreshed after every
portfolio change (:func:`refresh_calibration`).

Promises:
- Unchanged files (same size and mtime, or same sha256) embed nothing.
- A changed file is re-embedded and its old vector replaced; a file that is
  gone from a listed artist's files is removed (with ``prune``); bytes already
  embedded under another path or artist are reused, not re-embedded.
- A changed file that can no longer be read loses its old vector.
- Long runs commit every ``checkpoint`` images, so a killed run resumes there.
- One unreadable file is reported (path and reason) and skipped; the rest go on.
- Vectors are committed only while the index is pinned to the model that made
  them: a re-pin meanwhile is :class:`~mimicry.errors.PinMismatchError`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from mimicry.errors import InputError, PinMismatchError
from mimicry.images import expand_inputs, sha256_file
from mimicry.results import IndexReport, Skipped
from mimicry.store.pin import Pin
from mimicry.store.catalogue import FOLDER
from mimicry.store.writer import NewWork, Writer

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.flagging import Calibration
    from mimicry.engines import ProgressFn
    from mimicry.engines import Engine
    from mimicry.images import ImageSource
    from mimicry.index import StyleIndex

log = logging.getLogger(__name__)


def plan(writer: Writer, works: Mapping[str, Sequence[Path]], prune: bool,
         report: IndexReport) -> tuple[list[NewWork], list[int]]:
    """Decides, per listed file, unchanged / new / changed; and which works go
    (pruned ones, and changed files that can no longer be read)."""
    pending: list[NewWork] = []
    pruned: list[int] = []
    seen: list[tuple[int, int, int, str | None]] = []
    # A new file is hashed here only when the index holds works whose bytes it
    # could repeat (reuse instead of re-embedding); into an empty index each file
    # is read once, hashed and decoded together by the embedding loop.
    reuse_possible = len(writer.snapshot().work_ids) > 0
    for artist, paths in works.items():
        if isinstance(paths, (str, Path)):
            paths = [paths]
        existing = {w.path: w for w in writer.works(artist)}
        listed: set[str] = set()
        for path in expand_inputs(paths):
            path = Path(path).resolve()
            key = str(path)
            if key in listed:
                continue
            listed.add(key)
            try:
                st = path.stat()
            except OSError as exc:
                report.skipped.append(Skipped(key, f"cannot read file ({exc.strerror or exc})"))
                continue
            old = existing.get(key)
            if old and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
                report.unchanged += 1
                continue
            if old is None and not reuse_possible:
                pending.append(NewWork(artist, key, "", st.st_size, st.st_mtime_ns, None))
                continue
            try:
                sha = sha256_file(path)
            except OSError as exc:
                report.skipped.append(Skipped(key, f"cannot read file ({exc.strerror or exc})"))
                if old:
                    pruned.append(old.id)
                continue
            if old and old.sha256 == sha:
                seen.append((old.id, st.st_size, st.st_mtime_ns, None))
                report.unchanged += 1
                continue
            pending.append(NewWork(artist, key, sha, st.st_size, st.st_mtime_ns, old.id if old else None))
        if prune:  # works uploaded to the service are never pruned by a folder
            pruned.extend(w.id for p, w in existing.items() if p not in listed and w.origin == FOLDER)
    writer.touch_works(seen)
    return pending, pruned


def _replaced(items: Iterable[NewWork]) -> list[int]:
    return [w.replaces for w in items if w.replaces is not None]


def sync(writer: Writer, works: Mapping[str, Sequence[Path]], engine: Engine, *,
         prune: bool = True, checkpoint: int = 512, batch_size: int = 32,
         progress: ProgressFn | None = None) -> IndexReport:
    """Brings the listed artists' works in line with ``works`` (module docstring),
    embedding with ``engine`` in stretches of ``batch_size`` (stage ``indexing``)."""
    report = IndexReport()
    pending, pruned = plan(writer, works, prune, report)
    known = {w.sha256: w.id for w in writer.works()}
    reused = [w for w in pending if w.sha256 in known]
    vectors = writer.reconstruct([known[w.sha256] for w in reused])
    writer.commit(list(zip(reused, vectors)), pruned + _replaced(reused))
    report.removed += len(pruned)
    report.embedded += len(reused)
    by_path: dict[Path, list[NewWork]] = {}
    for w in pending:
        if w.sha256 not in known:
            by_path.setdefault(Path(w.path), []).append(w)
    buffer: list[tuple[NewWork, np.ndarray]] = []
    failed: list[NewWork] = []
    for stretch in engine.embed(list(by_path), batch_size=batch_size, progress=progress, stage="indexing"):
        report.skipped += stretch.skipped()
        for path, _ in stretch.failed:
            failed.extend(by_path[path])
        for path, v, sha in zip(stretch.keys, stretch.vectors, stretch.sha256):
            for w in by_path[path]:
                buffer.append((_as_embedded(w, path, sha), v))
        if len(buffer) >= checkpoint:
            writer.commit(buffer, _replaced(w for w, _ in buffer))
            report.embedded += len(buffer)
            buffer = []
    writer.commit(buffer, _replaced(w for w, _ in buffer) + _replaced(failed))
    report.embedded += len(buffer)
    writer.delete_artists_without_works()
    counts = writer.catalogue.artist_counts()
    report.artists = len(counts)
    report.works = sum(counts.values())
    return report


def _as_embedded(work: NewWork, path: Path, sha: str) -> NewWork:
    """``work`` as its file was when embedded: a file rewritten between the plan's
    hash and the embedding is stored with the hash of the bytes its vector came from."""
    if sha == work.sha256:
        return work
    try:
        st = path.stat()
    except OSError:
        return replace(work, sha256=sha)
    return replace(work, sha256=sha, size=st.st_size, mtime_ns=st.st_mtime_ns)


def rebuild(writer: Writer, pin: Pin, engine: Engine, drop_unreadable: bool = False, *,
            batch_size: int = 32, progress: ProgressFn | None = None) -> IndexReport:
    """Re-embeds every work of the index from its file the way ``pin`` says
    (with ``engine``, in stretches of ``batch_size``, stage ``rebuilding``) and
    re-pins the index in one commit (the old state stays until then).

    A work whose file is gone or unreadable stops the rebuild with
    :class:`InputError` (nothing changes: the drive may be unmounted), unless
    ``drop_unreadable``: then those works are dropped and reported. Calibration
    and background go (they were embedded the old way) and ``warnings`` says so.
    """
    report = IndexReport()
    works = writer.works()
    by_path: dict[Path, list[int]] = {}
    for w in works:
        by_path.setdefault(Path(w.path), []).append(w.id)
    known = {w.id: w for w in works}
    ids: list[int] = []
    rows: list[np.ndarray] = []
    seen: list[tuple[int, int, int, str | None]] = []
    for stretch in engine.embed(list(by_path), batch_size=batch_size, progress=progress, stage="rebuilding"):
        report.skipped += stretch.skipped()
        for path, v, sha in zip(stretch.keys, stretch.vectors, stretch.sha256):
            changed = [wid for wid in by_path[path] if sha != known[wid].sha256]
            if changed:  # rewritten since indexed: record the file as it was embedded
                try:
                    st = Path(path).stat()
                except OSError as exc:  # gone (or unreadable) since it was embedded
                    report.skipped.append(Skipped(str(path), f"cannot read file ({exc.strerror or exc})"))
                    continue
                seen += [(wid, st.st_size, st.st_mtime_ns, sha) for wid in changed]
            for wid in by_path[path]:
                ids.append(wid)
                rows.append(v)
    if report.skipped and not drop_unreadable:
        first = "; ".join(f"{s.path}: {s.reason}" for s in report.skipped[:3])
        raise InputError(f"{writer.folder}: rebuild stopped, {len(report.skipped)} indexed file(s) "
                         f"cannot be read ({first}); nothing changed. Make them readable, or "
                         f"rebuild with --drop-unreadable to drop those works")
    kept = set(ids)
    drop = [w.id for w in works if w.id not in kept]
    had_calibration = writer.catalogue.get_blob("calibration") is not None
    vectors = np.stack(rows) if rows else np.zeros((0, pin.dim), dtype=np.float32)
    writer.replace_all(pin, ids, vectors, drop, seen)
    report.embedded, report.removed = len(ids), len(drop)
    counts = writer.catalogue.artist_counts()
    report.artists, report.works = len(counts), sum(counts.values())
    report.rebuilt = True
    if had_calibration:
        report.warnings.append("calibration and background were embedded the old way and were "
                               "dropped: run `mimicry calibrate --background DIR` again")
    return report


# -- over an index: one writer each, the calibration kept in step ---------------------
def index_works(ix: StyleIndex, works: Mapping[str, Sequence[Path]], *, prune: bool, batch_size: int,
                checkpoint: int, progress: ProgressFn | None, engine: Engine) -> IndexReport:
    """:func:`sync` in one writer of ``ix``, recalibrating a calibrated index and
    auditing the change."""
    from mimicry.registry import CLI

    # The vectors' model, checked against the pin at every commit: the model
    # already loaded here, or the one a Ray engine's workers load (a model the
    # local engine loads inside the writer is checked against the pin then).
    made_by = ix.loaded_embedder if engine.name == "local" else getattr(engine, "made_by", None)
    with ix.store.writer(expect=made_by) as w:
        report = sync(w, works, engine, prune=prune, checkpoint=checkpoint, batch_size=batch_size,
                      progress=progress)
        report.warnings += refresh_calibration(w)
        if report.embedded or report.removed:
            w.record(CLI.kind, None, "index", ",".join(sorted(works))[:1000],
                     detail=f"embedded {report.embedded}, removed {report.removed}")
    return report


def rebuild_index(ix: StyleIndex, engine: Engine, *, drop_unreadable: bool, batch_size: int,
                  progress: ProgressFn | None) -> IndexReport:
    """:func:`rebuild` of ``ix`` with its model as it embeds today, unless another
    process did it meanwhile (then an empty report)."""
    emb = ix.embedder_unchecked()
    with ix.store.writer() as w:
        if not w.pin.same_model(emb):
            raise PinMismatchError(f"{ix.folder}: rebuild needs the pinned model {w.pin.backbone_id}")
        if w.pin.current and w.pin.recipe == emb.recipe.to_dict():
            return IndexReport()  # another process rebuilt it meanwhile
        log.warning("%s: re-embedding every work with recipe v%s", ix.folder, emb.recipe.version)
        report = rebuild(w, Pin.for_embedder(emb, w.pin.model_spec, w.pin.index_type), engine,
                         drop_unreadable=drop_unreadable, progress=progress, batch_size=batch_size)
    for line in report.warnings + [f"{s.path}: {s.reason}" for s in report.skipped]:
        log.warning("rebuild: %s", line)
    return report


def refresh_calibration(w: Writer) -> list[str]:
    """After a portfolio change, in the same writer: recalibrates a calibrated
    index (same target rate, stored background), or drops a calibration that
    no longer applies; the sentences to tell the user."""
    from mimicry.calibration import calibrate_snapshot
    from mimicry.flagging import STALE, calibration_of, calibration_state

    snap = w.snapshot()
    cal = calibration_of(snap, strict=False)
    if cal is None or calibration_state(snap, strict=False) != STALE:
        return []
    if len(snap.artists) < 2:
        w.set_calibration(None)
        return ["calibration dropped: fewer than two artists remain"]
    w.set_calibration(calibrate_snapshot(snap, cal.target_rate).to_arrays())
    return []


def calibrate_index(ix: StyleIndex, background: Sequence[ImageSource] | None, rate: float,
                    batch_size: int, progress: ProgressFn | None) -> Calibration:
    """Fits and stores the calibration of ``ix`` at ``rate``, after embedding and
    storing ``background`` when given (else the stored one, if any, is used);
    skipped background files are logged."""
    from mimicry.engines import Embedded
    from mimicry.portfolio import background_groups

    with ix.store.writer(expect=ix.loaded_embedder) as w:
        if background is not None:
            got = Embedded.gather(ix.engine().embed(expand_inputs(background), batch_size=batch_size,
                                                    progress=progress, stage="background"), ix.embedder.dim)
            for err in got.errors:
                log.warning("background image skipped: %s", err)
            w.set_background(got.vectors, background_groups(got.keys, background))
        return _calibrated(ix, w, rate)


def _calibrated(ix: StyleIndex, w: Writer, rate: float, source: str = "") -> Calibration:
    """In writer ``w``: fits the calibration at ``rate`` on the stored background,
    stores it and records it in the audit log (``source``: where the background came from)."""
    from mimicry.calibration import calibrate_snapshot
    from mimicry.registry import CLI

    cal = calibrate_snapshot(w.snapshot(), rate)
    w.set_calibration(cal.to_arrays())
    w.record(CLI.kind, None, "calibrate", str(ix.folder),
             detail=f"fpr {rate}, {cal.n_null} {cal.null_source} images{', ' + source if source else ''}"[:1000])
    return cal


def calibrate_index_vectors(ix: StyleIndex, vectors: np.ndarray, groups: np.ndarray, rate: float,
                            source: str) -> Calibration:
    """Fits and stores the calibration of ``ix`` at ``rate`` with ``vectors``
    (already embedded by the index's pinned model; ``groups``: one number per
    maker) stored as its background, in one writer; ``source`` says in the
    audit log where they came from (the scan history)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    with ix.store.writer(expect=ix.loaded_embedder) as w:
        if vectors.ndim != 2 or vectors.shape[1] != w.pin.dim or len(groups) != len(vectors):
            raise InputError(f"{ix.folder}: a background of {vectors.shape} vectors and {len(groups)} groups "
                             f"does not fit the index's {w.pin.dim} dimensions")
        w.set_background(vectors, np.asarray(groups, dtype=np.int64))
        return _calibrated(ix, w, rate, source)
