"""The storage entry point: an index folder's pin, catalogue, vectors and lock.

An index is one folder::

    manifest.json        readable copy of the pin (backbone, weights sha256, recipe, dim, schema)
    catalogue.sqlite     pin (authoritative), artists, works, calibration, background, generation,
                         the list of live vector segments
    segments/            immutable vector segments (:mod:`mimicry.store.segments`)
    lock                 held by the one writer at a time

(Indexes from before segments keep their vectors in one ``vectors.<N>.faiss``
file; they are read as they are, and the first write moves them into a segment.)

Promises:
- :meth:`Store.snapshot` hands out an immutable :class:`Snapshot` of the last
  committed state; it never takes the write lock and never writes rows or files
  of the index (SQLite's WAL may create its ``-wal``/``-shm`` companions). Safe
  from any number of threads: each read opens and closes its own connection.
- All writes go through :meth:`Store.writer`: one writer at a time (across
  processes and threads); each :meth:`Writer.commit` makes its new segment
  complete on disk before the catalogue commits it, so a kill at any moment
  leaves the last committed state, loadable, and nothing committed lost.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from mimicry.errors import CorruptIndexError, NotAnIndexError
from mimicry.settings import Settings, get_settings
from mimicry.store import ann as ann_io
from mimicry.store import pin as pin_io
from mimicry.store import segments as segment_io
from mimicry.store import vectors as vector_io
from mimicry.store.catalogue import FOLDER, Catalogue, Work
from mimicry.store.lock import WriteLock
from mimicry.store.pin import Pin
from mimicry.store.snapshot import Snapshot

log = logging.getLogger(__name__)

CATALOGUE = "catalogue.sqlite"
CALIBRATION, BACKGROUND = "calibration", "background"
SEGMENTS, SEGMENT_SEQ = "segments", "segment_seq"
#: The list of segments the last commit replaced: its files stay one more commit,
#: so a reader that read that list while the commit landed can still load them.
PREVIOUS_SEGMENTS = "previous_segments"
#: Builds one builder makes in a row when writes during a build call for another.
ANN_ROUNDS = 3
#: How long a builder waits for the build lock (held briefly by leftover cleaning).
ANN_LOCK_WAIT_S = 2.0


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


@dataclass(frozen=True)
class AnnPlan:
    """An approximate index to build after a writer: its kind, the snapshot
    the writer left (its vectors are what gets indexed), and the index file
    installed when it was planned (None: none), which it replaces."""

    kind: str
    snapshot: Snapshot
    replaces: str | None


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The ``[start, stop)`` runs of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


class Store:
    """One index folder on disk. Build with :meth:`create` or :meth:`open`."""

    def __init__(self, folder: Path, settings: Settings | None = None) -> None:
        self.folder = folder
        self.settings = settings or get_settings()
        self._lock = WriteLock(folder)
        self._guard = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._ann_cache: dict = {}  # the approximate index last read (by file name): read once per build
        self._growth: tuple[np.ndarray, int] | None = None  # (buffer, rows used): see _rows_after
        #: Build approximate indexes on a thread of their own after a writer (the
        #: service: the request that crossed the threshold returns at once).
        self.ann_in_background = False

    # -- opening ----------------------------------------------------------------
    @staticmethod
    def exists(folder: str | Path) -> bool:
        """Whether ``folder`` holds an index (its pin file, or a catalogue)."""
        folder = Path(folder)
        return (folder / pin_io.FILENAME).exists() or (folder / CATALOGUE).exists()

    @classmethod
    def create(cls, folder: str | Path, pin: Pin) -> Store:
        """An index at ``folder`` pinned to ``pin``: a new, empty one, or the one
        already there, whose own pin is kept (the caller checks it). Created
        under the write lock, so two creators never overwrite each other's pin."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        store = cls(folder)
        s = store.settings
        with store._lock.hold(s.lock_wait_s, s.retry_after_s):
            cat = Catalogue(folder / CATALOGUE)
            try:
                cat.begin()
                if cat.get_meta("pin") is None and not (folder / pin_io.FILENAME).exists():
                    cat.set_meta("pin", pin.to_json())
                cat.commit()
                pin_io.write_file(folder, store._pin_of(cat))
            finally:
                cat.rollback()
                cat.close()
        return store

    @classmethod
    def open(cls, folder: str | Path) -> Store:
        """The index at ``folder`` (:class:`NotAnIndexError` when there is none)."""
        folder = Path(folder)
        if not cls.exists(folder):
            raise NotAnIndexError(f"{folder}: not a mimicry index (no {pin_io.FILENAME})")
        return cls(folder)

    def _pin_of(self, cat: Catalogue) -> Pin:
        text = cat.get_meta("pin")
        if text is None:  # indexes from before the pin moved into the catalogue
            return pin_io.read_file(self.folder)
        return Pin.from_json(text, self.folder / CATALOGUE)

    def read_pin(self) -> Pin:
        """The committed pin (the catalogue's; ``manifest.json`` for indexes
        from before the pin moved there)."""
        with self._reader() as cat:
            return self._pin_of(cat)

    def close(self) -> None:
        """Drops the cached snapshot (reads hold no connection between calls)."""
        with self._guard:
            self._snapshot = None

    # -- reading ------------------------------------------------------------------
    @contextmanager
    def _reader(self) -> Iterator[Catalogue]:
        """A read connection of this call's own (never creates the catalogue)."""
        if not (self.folder / CATALOGUE).exists():
            raise NotAnIndexError(f"{self.folder}: not a mimicry index (no {CATALOGUE})")
        cat = Catalogue(self.folder / CATALOGUE, create=False)
        try:
            yield cat
        except sqlite3.DatabaseError as exc:
            raise CorruptIndexError(f"{self.folder / CATALOGUE}: unreadable ({exc})") from None
        finally:
            cat.close()

    def revision(self) -> int:
        with self._reader() as cat:
            return int(cat.get_meta("revision", "0") or 0)

    def snapshot(self) -> Snapshot:
        """The last committed state (reloaded only when a write committed since)."""
        current = self._snapshot
        with self._reader() as cat:
            if current is not None and current.revision == int(cat.get_meta("revision", "0") or 0):
                return current
            snap = self._load(cat, strict=True)
        with self._guard:
            if self._snapshot is None or snap.revision >= self._snapshot.revision:
                self._snapshot = snap
        return snap

    def _rows_after(self, vectors: np.ndarray, keep: np.ndarray, new: np.ndarray) -> np.ndarray:
        """``vectors[keep]`` followed by ``new``, for a writer's next snapshot.

        When nothing is removed and ``vectors`` is the used part of this
        store's growth buffer, the new rows go into its spare tail and the
        result is a longer view of it: earlier snapshots keep their shorter
        views, whose rows never change, so a commit of k works costs k rows,
        not a copy of the registry. Otherwise a new buffer, with an eighth
        spare, takes the rows."""
        n = int(keep.sum()) + len(new)
        buf, used = self._growth if self._growth is not None else (None, -1)
        if (buf is not None and keep.all() and used == len(vectors) and n <= len(buf)
                and vectors.__array_interface__["data"][0] == buf.__array_interface__["data"][0]):
            buf[used:n] = new
        else:
            buf = np.empty((n + n // 8 + 1024, vectors.shape[1]), np.float32)
            k = 0
            for a, b in _runs(keep):  # kept rows in contiguous runs: block copies
                buf[k:k + b - a] = vectors[a:b]
                k += b - a
            buf[k:n] = new
        self._growth = (buf, n)
        return buf[:n]

    def _offer(self, snap: Snapshot) -> None:
        """Keeps ``snap`` (read or built by a writer of this store) as the last
        snapshot when it is newer, so readers here need not read it again."""
        with self._guard:
            if self._snapshot is None or snap.revision > self._snapshot.revision:
                self._snapshot = snap

    def _load(self, cat: Catalogue, strict: bool) -> Snapshot:
        """Reads one committed state consistently (one read transaction), retrying
        while a writer replaces the vectors file it names. With ``strict`` off
        (writers, which may be about to replace them), an unreadable calibration
        or background is left out instead of refused."""
        s = self.settings
        stalled = 0  # failed loads of one unchanged state: only those count against the retries
        for _ in range(50 * (s.snapshot_retries + 1)):
            cat.db.execute("BEGIN")
            try:
                generation = int(cat.get_meta("generation", "0") or 0)
                revision = int(cat.get_meta("revision", "0") or 0)
                refs = segment_io.decode(cat.get_meta(SEGMENTS))
                pin = self._pin_of(cat)
                works = cat.works()
                counts = cat.artist_counts()
                cal = self._stored(cat, CALIBRATION, strict, dict)
                stored_bg = self._stored(cat, BACKGROUND, strict, lambda a: (a["vectors"], a.get("groups")))
            finally:
                cat.db.execute("COMMIT")
            try:
                ids, vecs = self._vectors(refs, generation, pin.dim, works)
            except FileNotFoundError:
                # A writer merged the files away meanwhile (read the new list),
                # unless the state has stood still: then they are missing.
                if int(cat.get_meta("revision", "0") or 0) == revision:
                    stalled += 1
                    if stalled > s.snapshot_retries:
                        raise CorruptIndexError(f"{self.folder}: vectors of generation {generation} "
                                                f"are missing") from None
                time.sleep(s.snapshot_retry_s)
                continue
            by_id = {w.id: w for w in works}
            if len(ids) != len(by_id) or set(by_id) != set(ids.tolist()):
                raise CorruptIndexError(f"{self.folder}: catalogue and vectors of generation "
                                        f"{generation} disagree")
            background, groups = stored_bg if stored_bg is not None else (None, None)
            snap = Snapshot.build(vecs, ids, by_id, generation=generation, revision=revision,
                                  stored_calibration=cal, background=background, background_groups=groups,
                                  pin=pin, folder=self.folder, artist_counts=counts)
            if (self.folder / ann_io.INFOS).exists():
                from dataclasses import replace

                snap = replace(snap, ann=ann_io.load(self.folder, snap.work_ids, self._ann_cache))
            return snap
        raise CorruptIndexError(f"{self.folder}: no committed state could be read")

    def _vectors(self, refs: list | None, generation: int, dim: int,
                 works: Sequence[Work]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the live works: from the segments, or from the one
        FAISS file of an index from before segments."""
        if refs is None:
            return vector_io.all_vectors(vector_io.load(self.folder, generation, dim))
        return segment_io.live(self.folder, refs, dim, np.fromiter((w.id for w in works), np.int64))

    def _stored(self, cat: Catalogue, name: str, strict: bool, parse):
        """The arrays stored under ``name``, parsed; None when absent (or, unless
        ``strict``, when unusable)."""
        try:
            arrays = cat.get_arrays(name)
            return None if arrays is None else parse(arrays)
        except CorruptIndexError:
            if strict:
                raise
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            if strict:
                raise CorruptIndexError(f"{cat.path}: stored {name!r} is malformed ({exc}); "
                                        f"redo it (`mimicry calibrate`)") from None
        log.warning("%s: stored %s is unusable and left out until it is rewritten", self.folder, name)
        return None

    # -- writing -------------------------------------------------------------------
    @contextmanager
    def writer(self, wait_s: float | None = None, build: bool = True) -> Iterator[Writer]:
        """Exclusive write access (waits up to ``wait_s``, default ``lock_wait_s``,
        then :class:`LockedError`). When the writer is done and has released
        the lock, the approximate index is rebuilt if the registry now calls
        for it (:meth:`build_ann`; not with ``build`` off), in this thread or,
        with :attr:`ann_in_background`, on a thread of its own."""
        s = self.settings
        plan: AnnPlan | None = None
        with self._lock.hold(s.lock_wait_s if wait_s is None else wait_s, s.retry_after_s):
            cat = Catalogue(self.folder / CATALOGUE)
            w: Writer | None = None
            try:
                w = Writer(self, cat)
                w.remove_leftovers()
                yield w
                plan = w.plan_ann() if build else None
            finally:
                if w is not None and w.pin_changed:
                    pin_io.write_file(self.folder, w.pin)
                cat.close()
        if plan is not None:
            if self.ann_in_background:
                threading.Thread(target=self.build_ann, args=(plan,), name="mimicry-ann-build",
                                 daemon=True).start()
            else:
                self.build_ann(plan)

    def build_ann(self, plan: AnnPlan) -> ann_io.AnnInfo | None:
        """Builds the approximate index ``plan`` asks for, outside the write
        lock, then installs it under the lock (a short commit) if the index is
        still pinned as it was and nobody installed another meanwhile; returns
        what it installed last. Works added or removed during the build are
        searched exactly or masked like any since the last build; when they are
        enough to call for another build (the writers that made them found this
        one running and left it to it), it builds again, up to
        :data:`ANN_ROUNDS` times. Skipped when another build holds the build
        lock; a failure is logged, never raised (the writes stand, searches
        stay exact where the index does not reach, and the next writer tries again)."""
        installed = None
        try:
            with ann_io.building(self.folder, wait_s=ANN_LOCK_WAIT_S) as mine:
                if not mine:
                    log.info("%s: another build of the approximate index is running", self.folder)
                    return None
                for _ in range(ANN_ROUNDS):
                    snap = plan.snapshot
                    info = ann_io.create(self.folder, np.asarray(snap.vectors), snap.work_ids, plan.kind,
                                         snap.generation)
                    with self.writer(build=False) as w:
                        if not w.install_ann(plan, info):
                            log.info("%s: the index changed while its approximate index was built; "
                                     "the next writer builds again", self.folder)
                            return installed
                        log.info("built a %s index of %d works (recall@10 %.3f)", plan.kind, info.vectors,
                                 info.recall_at_10)
                        installed = info
                        plan = w.plan_ann()  # what landed meanwhile may call for another
                    if plan is None:
                        break
                return installed
        except Exception as exc:  # noqa: BLE001 - derived data; the commits already landed
            log.warning("%s: approximate index not rebuilt (%s: %s); searching exactly beside the "
                        "last one until the next write", self.folder, type(exc).__name__, exc)
            return installed


class Writer:
    """What a holder of the write lock may do. Every method commits on its own,
    atomically; read :meth:`snapshot` for the state after them."""

    def __init__(self, store: Store, catalogue: Catalogue) -> None:
        self.store = store
        self.folder = store.folder
        self.catalogue = catalogue
        self.pin_changed = False
        self.last_added: list[int] = []
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
        self._refs = segment_io.decode(self.catalogue.get_meta(SEGMENTS))  # None: one legacy FAISS file
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
        vecs = self.store._rows_after(old.vectors, keep, np.asarray(new_vectors, np.float32))
        snap = old.advance(keep, [by_id[int(i)] for i in new_ids], vecs,
                           generation=int(cat.get_meta("generation", "0") or 0),
                           revision=int(cat.get_meta("revision", "0") or 0), artist_counts=cat.artist_counts())
        if (self.folder / ann_io.INFOS).exists():
            from dataclasses import replace

            snap = replace(snap, ann=ann_io.load(self.folder, snap.work_ids, self.store._ann_cache))
        self._set(snap, self._shareable)

    def remove_leftovers(self) -> None:
        """Deletes files no committed state names (an interrupted write's, a merge's inputs)."""
        if self._refs is None:
            vector_io.remove_stale(self.folder, self.generation)
        else:
            previous = segment_io.decode(self.catalogue.get_meta(PREVIOUS_SEGMENTS)) or []
            segment_io.remove_stale(self.folder, list(self._refs) + previous)
            vector_io.remove_stale(self.folder, -1)
        ann_io.remove_stale(self.folder)

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
        """Inside the transaction: the new vectors as a segment (an index from
        before segments first moves its vectors into one), and the merge
        :func:`~mimicry.store.segments.merge_plan` asks for; the list committed."""
        snap = self._snapshot
        new_vectors = np.asarray(new_vectors, np.float32).reshape(len(new_ids), self.pin.dim)
        gone = {int(i) for i in removed}
        keep = ~np.isin(snap.work_ids, np.asarray(list(gone), dtype=np.int64))
        if self._refs is None:  # from before segments: everything into one segment
            refs: list[segment_io.SegmentRef] = []
            window: tuple[int, int] | None = (0, 0)
        else:
            refs = list(self._refs)
            if len(new_ids):
                refs.append(segment_io.write(self.folder, self._next_segment(cat), np.asarray(new_ids),
                                             new_vectors))
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
        cat.set_meta(PREVIOUS_SEGMENTS, segment_io.encode(self._refs or []))
        cat.set_meta(SEGMENTS, segment_io.encode(refs))
        if self.pin.schema_version < pin_io.SCHEMA_VERSION:  # now in segments: older releases must refuse it
            from dataclasses import replace

            cat.set_meta("pin", replace(self.pin, schema_version=pin_io.SCHEMA_VERSION).to_json())
            self.pin_changed = True
        return refs

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
        (written by the callback, given the new work ids) commit together or not at all."""
        if not add and not remove_ids and remove_artist is None:
            return
        try:
            with self._transaction() as cat:
                cat.delete_works(remove_ids)
                if remove_artist is not None:
                    cat.delete_artist(remove_artist)
                new_ids = [cat.add_work(w.artist, w.path, w.sha256, w.size, w.mtime_ns, w.origin)
                           for w, _ in add]
                self.last_added = new_ids
                if audit is not None:
                    audit(cat, new_ids)
                vectors = np.stack([v for _, v in add]) if add else np.zeros((0, self.pin.dim), np.float32)
                refs = self._commit_vectors(cat, new_ids, vectors, remove_ids)
                generation = self.generation + 1
                cat.set_meta("generation", str(generation))
        except BaseException:
            self._reload()  # back to the committed state
            raise
        self._refs = refs
        self.remove_leftovers()
        log.debug("committed generation %d", generation)
        if self.pin_changed or refs is None or len(refs) <= 1:
            self._reload()  # re-pinned, or merged into one segment: read it mapped, not copied
        else:
            try:
                self._advance(new_ids, vectors, remove_ids)
            except Exception:  # noqa: BLE001 - the commit landed; read it from disk instead
                log.warning("%s: reading the committed state again", self.folder, exc_info=True)
                self._reload()

    def replace_all(self, pin: Pin, ids: Sequence[int], vectors: np.ndarray, drop: Sequence[int],
                    seen: Sequence[tuple[int, int, int, str | None]] = ()) -> None:
        """Re-pins the index: the works ``ids`` get ``vectors`` (embedded the new
        way), the works ``drop`` go, and calibration and background (embedded
        the old way) are dropped, all in one commit."""
        generation = self.generation + 1
        ann_io.clear(self.folder)  # its codes are of the old vectors: never search them again
        try:
            with self._transaction() as cat:
                cat.delete_works(drop)
                for work_id, size, mtime_ns, sha in seen:
                    cat.touch_work(work_id, size, mtime_ns, sha)
                cat.delete_artists_without_works()
                cat.delete_blob(CALIBRATION)
                cat.delete_blob(BACKGROUND)
                refs = [segment_io.write(self.folder, self._next_segment(cat), np.asarray(ids, np.int64),
                                         np.asarray(vectors, np.float32).reshape(len(ids), pin.dim))]
                cat.set_meta(PREVIOUS_SEGMENTS, segment_io.encode(self._refs or []))
                cat.set_meta(SEGMENTS, segment_io.encode(refs))
                cat.set_meta("generation", str(generation))
                cat.set_meta("pin", pin.to_json())
        except BaseException:
            self._reload()
            raise
        self._refs = refs
        self.remove_leftovers()
        self.pin_changed = True
        self._reload()
        self.refresh_ann()

    def refresh_ann(self) -> ann_io.AnnInfo | None:
        """Builds the approximate index the pinned type and the registry's size
        call for now, under the write lock (or drops it). For re-pins, whose
        old codes must never be searched again; the builds that follow
        ordinary writes run after the lock is released (:meth:`Store.build_ann`).
        Derived data, outside the catalogue: a kill here leaves the last index,
        or none, and searches stay correct."""
        snap = self._snapshot
        kind = ann_io.resolve(self.pin.index_type, len(snap.work_ids))
        if kind == ann_io.FLAT:
            ann_io.clear(self.folder)
            info = None
        else:
            info = ann_io.create(self.folder, np.asarray(snap.vectors), snap.work_ids, kind, self.generation)
            log.info("built a %s index of %d works (recall@10 %.3f)", kind, info.vectors, info.recall_at_10)
        self._publish_ann(info)
        return info

    def _publish_ann(self, info: ann_io.AnnInfo | None) -> None:
        """Points readers at ``info`` (None: at none, already cleared) and moves
        the revision, so readers load it."""
        if info is not None:
            ann_io.install(self.folder, info)
        with self._transaction() as cat:
            cat.set_meta("ann", info.file if info is not None else "")
        self._reload()

    def plan_ann(self) -> AnnPlan | None:
        """At the end of a writer: what approximate index the registry now calls
        for (checked every time, so a build that failed or was killed is
        retried by the next writer), to be built once the lock is released; an
        index no longer wanted (flat pinned, or too few works) is dropped now."""
        snap = self._snapshot
        try:
            kind = ann_io.resolve(self.pin.index_type, len(snap.work_ids))
            if not ann_io.needs_rebuild(snap.ann, self.pin.index_type, len(snap.work_ids)):
                return None
            if kind == ann_io.FLAT:
                self.refresh_ann()
                return None
            return AnnPlan(kind, snap, ann_io.current_file(self.folder))
        except Exception as exc:  # noqa: BLE001 - derived data; the commits already landed
            log.warning("%s: approximate index not checked (%s: %s)", self.folder, type(exc).__name__, exc)
            return None

    def install_ann(self, plan: AnnPlan, info: ann_io.AnnInfo) -> bool:
        """Points readers at ``info``, built for ``plan``, unless the index has
        moved on: re-pinned (the codes would be of old vectors), another index
        installed since, another kind now wanted, or the files gone."""
        snap = self._snapshot
        current = ann_io.current_file(self.folder)
        if (self.pin != plan.snapshot.pin or current != plan.replaces
                or ann_io.resolve(self.pin.index_type, len(snap.work_ids)) != plan.kind
                or not all(f.exists() for f in ann_io.files(self.folder, info.file))):
            return False
        self._publish_ann(info)
        return True

    def set_index_type(self, kind: str) -> None:
        """Pins another index type and builds (or drops) the approximate index for it."""
        from dataclasses import replace

        ann_io.check_kind(kind)
        if kind == self.pin.index_type:
            return
        pin = replace(self.pin, index_type=kind)
        with self._transaction() as cat:
            cat.set_meta("pin", pin.to_json())
        self.pin_changed = True
        self._reload()
        self.refresh_ann()

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

    def artist_exists(self, name: str) -> bool:
        return self.catalogue.artist_id(name) is not None

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

    def set_background(self, vectors: np.ndarray, groups: np.ndarray) -> None:
        """Stores the background (reference population) and each image's group."""
        with self._transaction() as cat:
            cat.set_arrays(BACKGROUND, {"vectors": np.asarray(vectors, dtype=np.float32),
                                        "groups": np.asarray(groups, dtype=np.int64)})
        self._reload()
