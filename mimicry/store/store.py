"""The storage entry point: an index folder's pin, catalogue, vectors and lock.

An index is one folder::

    manifest.json        readable copy of the pin (backbone, weights sha256, recipe, dim, schema)
    catalogue.sqlite     pin (authoritative), artists, works, calibration, background, generation,
                         the list of live vector segments, the approximate index in use
    segments/            immutable vector segments (:mod:`mimicry.store.segments`)
    ann/, index_infos.json   approximate index files and a readable copy of what is in use
                         (:mod:`mimicry.store.ann`, built by :mod:`mimicry.store.ann_builds`)
    lock                 held by the one writer at a time (``ann.lock``: one build at a time)

Only the pinned schema version is read (:mod:`mimicry.store.pin`); format
changes go through :mod:`mimicry.store.migrations`.

Promises:
- :meth:`Store.snapshot` hands out an immutable :class:`Snapshot` of the last
  committed state, read in one read transaction (rows, segments, calibration,
  background and the approximate index that go together); it never takes the
  write lock and never writes rows or files of the index (SQLite's WAL may
  create its ``-wal``/``-shm`` companions). Safe from any number of threads:
  each read opens and closes its own connection.
- All writes go through :meth:`Store.writer`: one writer at a time (across
  processes and threads), committing atomically (:mod:`mimicry.store.writer`),
  so a kill at any moment leaves the last committed state, loadable, and
  nothing committed lost.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from mimicry.errors import CorruptIndexError, NotAnIndexError
from mimicry.settings import Settings, get_settings
from mimicry.store import pin as pin_io
from mimicry.store import segments as segment_io
from mimicry.store.catalogue import ANN, BACKGROUND, CALIBRATION, SEGMENTS, Catalogue, Work
from mimicry.store.pin import Pin
from mimicry.store.snapshot import Snapshot

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.store.ann import AnnInfo
    from mimicry.store.lock import WriteLock
    from mimicry.store.writer import Writer

# Writers, locks and approximate indexes are imported where they are used: a
# read of a small index (a scan) loads none of them.

log = logging.getLogger(__name__)

CATALOGUE = "catalogue.sqlite"


@dataclass(frozen=True)
class _State:
    """What one read transaction read: everything but the files it names."""

    generation: int
    revision: int
    refs: list[segment_io.SegmentRef]
    pin: Pin
    works: list[Work]
    counts: dict[str, int]
    calibration: Mapping[str, np.ndarray] | None
    background: tuple[np.ndarray, Any] | None
    ann: AnnInfo | None


def _revision(cat: Catalogue) -> int:
    return int(cat.get_meta("revision", "0") or 0)


class Store:
    """One index folder on disk. Build with :meth:`create` or :meth:`open`."""

    def __init__(self, folder: Path, settings: Settings | None = None) -> None:
        self.folder = folder
        self.settings = settings or get_settings()
        self._write_lock: WriteLock | None = None
        self._guard = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._ann_cache: dict = {}  # the approximate index last read (by file name): read once per build
        self._growth: tuple[np.ndarray, int] | None = None  # (buffer, rows used): see snapshot.grow
        #: Build approximate indexes on a thread of their own after a writer (the
        #: service: the request that crossed the threshold returns at once).
        self.ann_in_background = False

    @property
    def _lock(self) -> WriteLock:
        """The folder's write lock (made on first use)."""
        if self._write_lock is None:
            from mimicry.store.lock import WriteLock

            self._write_lock = WriteLock(self.folder)
        return self._write_lock

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
                if cat.get_meta("pin") is None:
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
        if text is None:  # a catalogue being created, not yet pinned
            raise NotAnIndexError(f"{self.folder}: not a mimicry index (its catalogue holds no pin)")
        return Pin.from_json(text, self.folder / CATALOGUE)

    def read_pin(self) -> Pin:
        """The committed pin (the catalogue's)."""
        with self._reader() as cat:
            return self._pin_of(cat)

    def read_meta(self, key: str) -> str | None:
        """One committed ``meta`` value (e.g. ``background_runtime``), or None."""
        with self._reader() as cat:
            return cat.get_meta(key)

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

    def snapshot(self) -> Snapshot:
        """The last committed state (reloaded only when a write committed since)."""
        current = self._snapshot
        with self._reader() as cat:
            if current is not None and current.revision == _revision(cat):
                return current
            snap = self._load(cat, strict=True)
        with self._guard:
            if self._snapshot is None or snap.revision >= self._snapshot.revision:
                self._snapshot = snap
        return snap

    def _offer(self, snap: Snapshot) -> None:
        """Keeps ``snap`` (read or built by a writer of this store) as the last
        snapshot when it is newer, so readers here need not read it again."""
        with self._guard:
            if self._snapshot is None or snap.revision > self._snapshot.revision:
                self._snapshot = snap

    def _load(self, cat: Catalogue, strict: bool) -> Snapshot:
        """Reads one committed state consistently (one read transaction), then
        the files it names, retrying while writers replace them. With
        ``strict`` off (writers, which may be about to replace them), an
        unreadable calibration or background is left out instead of refused."""
        s = self.settings
        stalled = 0  # failed loads of one unchanged state: only those count against the retries
        for _ in range(50 * (s.snapshot_retries + 1)):
            state = self._read_state(cat, strict)
            try:
                return self._assemble(cat, state)
            except FileNotFoundError:
                # A writer merged the files away meanwhile (read the new list),
                # unless the state has stood still: then they are missing.
                if _revision(cat) == state.revision:
                    stalled += 1
                    if stalled > s.snapshot_retries:
                        raise CorruptIndexError(f"{self.folder}: vectors of generation {state.generation} "
                                                f"are missing") from None
                time.sleep(s.snapshot_retry_s)
        raise CorruptIndexError(f"{self.folder}: no committed state could be read")

    def _read_state(self, cat: Catalogue, strict: bool) -> _State:
        """Everything one committed state holds in the catalogue, in one read transaction."""
        cat.db.execute("BEGIN")
        try:
            pin = self._pin_of(cat)
            pin.check_current(self.folder)  # another schema's rows and files are not read
            return _State(
                int(cat.get_meta("generation", "0") or 0), _revision(cat),
                segment_io.decode(cat.get_meta(SEGMENTS)), pin, cat.works(), cat.artist_counts(),
                self._stored(cat, CALIBRATION, strict, dict),
                self._stored(cat, BACKGROUND, strict, lambda a: (a["vectors"], a.get("groups"))),
                self._ann_in_use(cat))
        finally:
            cat.db.execute("COMMIT")

    def _assemble(self, cat: Catalogue, state: _State) -> Snapshot:
        """The snapshot of ``state``, from the files it names (``FileNotFoundError``:
        replaced meanwhile)."""
        live = np.fromiter((w.id for w in state.works), np.int64, len(state.works))
        ids, vecs = segment_io.live(self.folder, state.refs, state.pin.dim, live)
        by_id = {w.id: w for w in state.works}
        if len(ids) != len(by_id) or set(by_id) != set(ids.tolist()):
            raise CorruptIndexError(f"{self.folder}: catalogue and vectors of generation "
                                    f"{state.generation} disagree")
        background, groups = state.background if state.background is not None else (None, None)
        snap = Snapshot.build(vecs, ids, by_id, generation=state.generation, revision=state.revision,
                              stored_calibration=state.calibration, background=background,
                              background_groups=groups, pin=state.pin, folder=self.folder,
                              artist_counts=state.counts)
        if state.ann is None:
            return snap
        from mimicry.store import ann_builds

        try:
            view = ann_builds.view_for(self, state.ann, snap.work_ids)
        except FileNotFoundError:
            if _revision(cat) != state.revision:
                raise  # replaced by an install since: read the state again
            log.warning("%s: approximate index %s is missing; searching exactly", self.folder, state.ann.file)
            view = None
        return replace(snap, ann=view) if view is not None else snap

    def _ann_in_use(self, cat: Catalogue) -> AnnInfo | None:
        """The approximate index the catalogue names (inside the caller's transaction)."""
        text = cat.get_meta(ANN)
        if not text:
            return None
        from mimicry.store import ann as ann_io

        return ann_io.decode(text, self.folder)

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
    def writer(self, wait_s: float | None = None, build: bool = True, expect: Any = None) -> Iterator[Writer]:
        """Exclusive write access (waits up to ``wait_s``, default ``lock_wait_s``,
        then :class:`LockedError`). An index of an older schema is brought up
        to date first (:mod:`mimicry.store.migrations`). ``expect``: the model
        (an embedder: ``backbone_id``, ``weights_sha256``, ``dim``, ``recipe``)
        that made the vectors this writer will write; each write of vectors
        checks it against the pin committed, under the lock
        (:class:`PinMismatchError`, nothing written). When the writer is done
        and has released the lock, the approximate index is rebuilt if the
        registry now calls for it (:mod:`mimicry.store.ann_builds`; not with
        ``build`` off)."""
        from mimicry.store import ann_builds
        from mimicry.store.writer import Writer

        s = self.settings
        plan = None
        with self._lock.hold(s.lock_wait_s if wait_s is None else wait_s, s.retry_after_s):
            cat = Catalogue(self.folder / CATALOGUE)
            w: Writer | None = None
            try:
                w = Writer(self, cat, expect)
                w.remove_leftovers()
                yield w
                plan = ann_builds.plan(w) if build else None
            finally:
                if w is not None and w.pin_changed:
                    pin_io.write_file(self.folder, w.pin)
                cat.close()
        if plan is not None:
            ann_builds.start(self, plan)
