"""Writes to an index: what the holder of the write lock may do.

A :class:`Writer` comes from :meth:`mimicry.store.Store.writer` (which holds
the lock) and commits each change on its own, atomically, in one SQLite
transaction: rows, segments, generation, calibration, background, audit rows.

Promises:
- Crash safety: a commit's new segment (and any merge's) is complete on disk
  before the catalogue commits the list naming it (:mod:`mimicry.store.segments`),
  so a kill at any moment leaves the last committed state, loadable, and
  nothing committed lost. Files no committed state names are removed by the
  next writer, except those the last commit replaced (segments) or the last
  install replaced (approximate index): they stay one more commit, for readers
  that read the state before.
- Tiered merges: past :data:`~mimicry.store.segments.MAX_SEGMENTS` the
  smallest neighbours merge, past the dead share everything does; a small
  write never rewrites the large base segment.
- Growth buffer: after a commit the writer advances its snapshot from the
  previous one (new rows go into the spare tail of one buffer), the same
  state a reader would read, without reading every work and vector again.
- With ``expect`` (the model that made the vectors about to be written), a
  write of vectors (:meth:`Writer.commit` adding works, :meth:`Writer.set_background`)
  is :class:`PinMismatchError` when the pin committed is not that model and
  recipe (a re-pin landed since the vectors were made); nothing is written.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from mimicry.errors import CorruptIndexError
from mimicry.store import ann_builds
from mimicry.store import migrations
from mimicry.store import segments as segment_io
from mimicry.store.catalogue import (
    BACKGROUND,
    CALIBRATION,
    FOLDER,
    PREVIOUS_SEGMENTS,
    SEGMENT_SEQ,
    SEGMENTS,
    Catalogue,
    Work,
)
from mimicry.store.pin import Pin
from mimicry.store.snapshot import Snapshot, grow

if TYPE_CHECKING:
    from mimicry.store.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewWork:
    """A work about to be committed; ``replaces`` is the id of the work whose
    vector it replaces (a changed file), if any."""

    artist: str
    path: str
    sha256: str
    size: int
    mtime_ns: int
    replaces: int | None = None
    origin: str = FOLDER


class Writer:
    """What a holder of the write lock may do. Every method commits on its own,
    atomically; read :meth:`snapshot` for the state after them."""

    def __init__(self, store: Store, catalogue: Catalogue, expect: Any = None) -> None:
        self.store = store
        self.folder = store.folder
        self.catalogue = catalogue
        self.expect = expect
        self.pin_changed = migrations.upgrade(catalogue, store.folder)
        self._reload(reuse=True)

    def _reload(self, reuse: bool = False) -> None:
        """Reads the committed state. With ``reuse``, the store's last snapshot
        stands in when it is of the current revision (nothing can commit while
        this writer holds the lock), instead of reading every work again."""
        cached = self.store._snapshot if reuse else None
        if cached is not None and cached.revision == int(self.catalogue.get_meta("revision", "0") or 0):
            self._set(cached, shareable=True)
            return
        self.store._growth = None  # the state is read afresh: the buffer's rows are no one's next
        try:
            self._set(self.store._load(self.catalogue, strict=True), shareable=True)
        except CorruptIndexError:
            # An unreadable calibration or background: a writer works without
            # it (to rewrite it), but readers must keep refusing this state.
            self._set(self.store._load(self.catalogue, strict=False), shareable=False)

    def _set(self, snap: Snapshot, shareable: bool) -> None:
        self._snapshot = snap
        self._shareable = shareable
        self.generation = snap.generation
        self.pin: Pin = snap.pin  # type: ignore[assignment]
        self._refs = segment_io.decode(self.catalogue.get_meta(SEGMENTS))
        self._rows: dict[int, int] | None = None
        if shareable:
            self.store._offer(snap)

    @property
    def _row(self) -> dict[int, int]:
        """Snapshot row of each work id (built on first use)."""
        if self._rows is None:
            self._rows = {int(i): r for r, i in enumerate(self._snapshot.work_ids)}
        return self._rows

    def _advance(self, new_ids: Sequence[int], new_vectors: np.ndarray, removed: Sequence[int]) -> None:
        """The state after a :meth:`commit` of ``new_ids`` and ``removed``, from
        the state before it and the commit itself: the same snapshot a full
        reload reads (rows in segment order: the kept rows, then the new
        segment's; tested), without reading every work and vector again."""
        old = self._snapshot
        cat = self.catalogue
        keep = ~np.isin(old.work_ids, np.asarray(list(removed), dtype=np.int64))
        by_id = {w.id: w for w in cat.works(ids=new_ids)}
        self.store._growth = grow(self.store._growth, old.vectors, keep, np.asarray(new_vectors, np.float32))
        vecs = self.store._growth[0][:self.store._growth[1]]
        snap = old.advance(keep, [by_id[int(i)] for i in new_ids], vecs,
                           generation=int(cat.get_meta("generation", "0") or 0),
                           revision=int(cat.get_meta("revision", "0") or 0), artist_counts=cat.artist_counts())
        self._set(ann_builds.with_view(self.store, cat, snap), self._shareable)

    def remove_leftovers(self) -> None:
        """Deletes files no committed state names (an interrupted write's, a
        merge's inputs, replaced approximate indexes), sparing those the last
        commit or install replaced."""
        previous = segment_io.decode(self.catalogue.get_meta(PREVIOUS_SEGMENTS))
        segment_io.remove_stale(self.folder, list(self._refs) + previous)
        ann_builds.remove_stale(self)

    def snapshot(self) -> Snapshot:
        """The committed state as this writer leaves it so far."""
        return self._snapshot

    def works(self, artist: str | None = None) -> list[Work]:
        return self.catalogue.works(artist)

    def reconstruct(self, ids: Sequence[int]) -> np.ndarray:
        """The committed vectors of works ``ids``, in that order."""
        if not len(ids):
            return np.zeros((0, self.pin.dim), dtype=np.float32)
        return np.asarray(self._snapshot.vectors[[self._row[int(i)] for i in ids]], dtype=np.float32)

    def _next_segment(self, cat: Catalogue) -> int:
        n = int(cat.get_meta(SEGMENT_SEQ, "0") or 0) + 1
        cat.set_meta(SEGMENT_SEQ, str(n))
        return n

    def _commit_vectors(self, cat: Catalogue, new_ids: Sequence[int], new_vectors: np.ndarray,
                        removed: Sequence[int]) -> list[segment_io.SegmentRef]:
        """Inside the transaction: the new vectors as a segment, and the merge
        :func:`~mimicry.store.segments.merge_plan` asks for; the list committed."""
        snap = self._snapshot
        gone = {int(i) for i in removed}
        keep = ~np.isin(snap.work_ids, np.asarray(list(gone), dtype=np.int64))
        refs = list(self._refs)
        if len(new_ids):
            refs.append(segment_io.write(self.folder, self._next_segment(cat), np.asarray(new_ids), new_vectors))
        window = segment_io.merge_plan(refs, int(keep.sum()) + len(new_ids))
        if window == (0, len(refs)):  # everything, dead rows dropped: from the snapshot
            ids = np.concatenate([snap.work_ids[keep], np.asarray(new_ids, dtype=np.int64)])
            vecs = np.concatenate([np.asarray(snap.vectors[keep]), new_vectors])
            refs = [segment_io.write(self.folder, self._next_segment(cat), ids, vecs)] if len(ids) else []
        elif window is not None:  # two neighbours: their live rows, in order, from their files
            start, stop = window
            live_ids = np.concatenate([snap.work_ids[keep], np.asarray(new_ids, dtype=np.int64)])
            ids, vecs = segment_io.live(self.folder, refs[start:stop], self.pin.dim, live_ids)
            merged = segment_io.write(self.folder, self._next_segment(cat), ids, np.asarray(vecs))
            refs = refs[:start] + [merged] + refs[stop:]
        cat.set_meta(PREVIOUS_SEGMENTS, segment_io.encode(self._refs))
        cat.set_meta(SEGMENTS, segment_io.encode(refs))
        ann_builds.forget_previous(cat)
        return refs

    def _check_expected(self, cat: Catalogue) -> None:
        """Inside the transaction, under the lock: the vectors about to be
        written were made by the model and recipe the committed pin names
        (when the writer was opened with ``expect``)."""
        if self.expect is not None:
            Pin.from_json(cat.get_meta("pin") or "", self.folder).check(self.expect, self.folder)

    @contextmanager
    def _transaction(self, affects_reads: bool = True) -> Iterator[Catalogue]:
        """One transaction; the revision moves only when rows that readers
        see changed (never for audit rows alone)."""
        cat = self.catalogue
        cat.begin()
        before = cat.db.total_changes
        try:
            yield cat
            if affects_reads and cat.db.total_changes != before:
                cat.bump_revision()
            cat.commit()
        except BaseException:
            cat.rollback()
            raise

    def commit(self, add: Sequence[tuple[NewWork, np.ndarray]], remove_ids: Sequence[int],
               remove_artist: str | None = None, audit: Callable[[Catalogue, list[int]], None] | None = None,
               ) -> None:
        """Adds and removes works (and with ``remove_artist``, that artist's row)
        as one transaction: rows, vectors, generation and the ``audit`` row
        (written by the callback, given the new work ids) commit together or
        not at all. Adding works checks ``expect`` first (module docstring)."""
        if not add and not remove_ids and remove_artist is None:
            return
        try:
            with self._transaction() as cat:
                if add:
                    self._check_expected(cat)
                cat.delete_works(remove_ids)
                if remove_artist is not None:
                    cat.delete_artist(remove_artist)
                runtime = getattr(self.expect, "runtime", None)  # what made the vectors
                new_ids = [cat.add_work(w.artist, w.path, w.sha256, w.size, w.mtime_ns, w.origin, runtime)
                           for w, _ in add]
                if audit is not None:
                    audit(cat, new_ids)
                vectors = (np.stack([v for _, v in add]).astype(np.float32).reshape(len(add), self.pin.dim)
                           if add else np.zeros((0, self.pin.dim), np.float32))
                refs = self._commit_vectors(cat, new_ids, vectors, remove_ids)
                generation = self.generation + 1
                cat.set_meta("generation", str(generation))
        except BaseException:
            self._reload()  # back to the committed state
            raise
        self._refs = refs
        self.remove_leftovers()
        log.debug("committed generation %d", generation)
        if len(refs) <= 1:
            self._reload()  # merged into one segment: read it mapped, not copied
        else:
            try:
                self._advance(new_ids, vectors, remove_ids)
            except Exception:  # noqa: BLE001 - the commit landed; read it from disk instead
                log.warning("%s: reading the committed state again", self.folder, exc_info=True)
                self._reload()

    def replace_all(self, pin: Pin, ids: Sequence[int], vectors: np.ndarray, drop: Sequence[int],
                    seen: Sequence[tuple[int, int, int, str | None]] = ()) -> None:
        """Re-pins the index: the works ``ids`` get ``vectors`` (embedded the new
        way), the works ``drop`` go, and calibration, background and the
        approximate index (all of the old vectors) are dropped, all in one
        commit; then the approximate index is built for the new vectors."""
        if self.expect is not None:
            pin.check(self.expect, self.folder)
        generation = self.generation + 1
        try:
            with self._transaction() as cat:
                cat.delete_works(drop)
                for work_id, size, mtime_ns, sha in seen:
                    cat.touch_work(work_id, size, mtime_ns, sha)
                cat.delete_artists_without_works()
                cat.set_runtime(ids, getattr(self.expect, "runtime", None))
                cat.delete_blob(CALIBRATION)
                cat.delete_blob(BACKGROUND)
                refs = [segment_io.write(self.folder, self._next_segment(cat), np.asarray(ids, np.int64),
                                         np.asarray(vectors, np.float32).reshape(len(ids), pin.dim))]
                cat.set_meta(PREVIOUS_SEGMENTS, segment_io.encode(self._refs))
                cat.set_meta(SEGMENTS, segment_io.encode(refs))
                cat.set_meta("generation", str(generation))
                cat.set_meta("pin", pin.to_json())
                ann_builds.drop_in(cat, self.store)  # its codes are of the old vectors: never searched with the new
        except BaseException:
            self._reload()
            raise
        self._refs = refs
        self.remove_leftovers()
        self.pin_changed = True
        self._reload()
        ann_builds.refresh(self)

    def set_index_type(self, kind: str) -> None:
        """Pins another index type and builds (or drops) the approximate index for it."""
        from dataclasses import replace

        from mimicry.store.ann import check_kind

        check_kind(kind)
        if kind == self.pin.index_type:
            return
        with self._transaction() as cat:
            cat.set_meta("pin", replace(self.pin, index_type=kind).to_json())
        self.pin_changed = True
        self._reload()
        ann_builds.refresh(self)

    def touch_works(self, seen: Sequence[tuple[int, int, int, str | None]]) -> None:
        """Records files seen again unchanged in content: (work id, size, mtime, new sha256 or None)."""
        if not seen:
            return
        with self._transaction() as cat:
            for work_id, size, mtime_ns, sha in seen:
                cat.touch_work(work_id, size, mtime_ns, sha)
        self._reload()

    def delete_artists_without_works(self) -> None:
        with self._transaction() as cat:
            cat.delete_artists_without_works()
        self._reload()

    def artist_exists(self, name: str, nocase: bool = False) -> bool:
        return self.catalogue.artist_id(name, nocase=nocase) is not None

    @contextmanager
    def change(self) -> Iterator[Catalogue]:
        """One atomic change of rows only (no vectors): registrations, tokens, audit rows."""
        with self._transaction() as cat:
            yield cat
        self._reload()

    def record(self, actor: str, actor_artist: str | None, action: str, target: str,
               detail: str = "", request_id: str | None = None) -> None:
        """Appends one audit row on its own: no snapshot changes, so readers keep theirs."""
        with self._transaction(affects_reads=False) as cat:
            cat.record(actor, actor_artist, action, target, detail, request_id)

    def set_calibration(self, arrays: Mapping[str, np.ndarray] | None) -> None:
        """Stores the calibration's arrays (the domain's ``Calibration.to_arrays``), or drops it."""
        with self._transaction() as cat:
            if arrays is None:
                cat.delete_blob(CALIBRATION)
            else:
                cat.set_arrays(CALIBRATION, dict(arrays))
        self._reload()

    def set_background(self, vectors: np.ndarray, groups: np.ndarray,
                       calibration: Mapping[str, np.ndarray] | None = None, subset: bool = False) -> None:
        """Stores the background, its groups (and ``calibration`` made on it, in the same
        transaction); checks ``expect``. ``subset``: rows of the stored one (runtime kept)."""
        with self._transaction() as cat:
            self._check_expected(cat)
            cat.set_arrays(BACKGROUND, {"vectors": np.asarray(vectors, dtype=np.float32),
                                        "groups": np.asarray(groups, dtype=np.int64)})
            if not subset:
                cat.set_meta("background_runtime", getattr(self.expect, "runtime", None) or "not recorded")
            if calibration is not None:
                cat.set_arrays(CALIBRATION, dict(calibration))
        self._reload()
