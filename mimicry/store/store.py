"""The storage entry point: an index folder's pin, catalogue, vectors and lock.

An index is one folder::

    manifest.json        readable copy of the pin (backbone, weights sha256, recipe, dim, schema)
    catalogue.sqlite     pin (authoritative), artists, works, calibration, background, generation
    vectors.<N>.faiss    the vectors of committed generation N (IndexIDMap2, exact inner product)
    lock                 held by the one writer at a time

Promises:
- :meth:`Store.snapshot` hands out an immutable :class:`Snapshot` of the last
  committed state; it never takes the write lock and never writes. Safe from
  any number of threads.
- All writes go through :meth:`Store.writer`: one writer at a time (across
  processes and threads); each :meth:`Writer.commit` makes the next vectors
  file complete on disk before the catalogue commits it, so a kill at any
  moment leaves the last committed state, loadable, and nothing committed lost.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mimicry.calibration import Calibration
from mimicry.errors import CorruptIndexError, NotAnIndexError
from mimicry.settings import Settings, get_settings
from mimicry.store import pin as pin_io
from mimicry.store import vectors as vector_io
from mimicry.store.catalogue import Catalogue, Work
from mimicry.store.lock import WriteLock
from mimicry.store.pin import Pin
from mimicry.store.snapshot import Snapshot

log = logging.getLogger(__name__)

CATALOGUE = "catalogue.sqlite"
CALIBRATION, BACKGROUND = "calibration", "background"


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


class Store:
    """One index folder on disk. Build with :meth:`create` or :meth:`open`."""

    def __init__(self, folder: Path, settings: Settings | None = None) -> None:
        self.folder = folder
        self.settings = settings or get_settings()
        self._lock = WriteLock(folder)
        self._local = threading.local()
        self._connections: list[Catalogue] = []
        self._guard = threading.Lock()
        self._snapshot: Snapshot | None = None

    # -- opening ----------------------------------------------------------------
    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / pin_io.FILENAME).exists()

    @classmethod
    def create(cls, folder: str | Path, pin: Pin) -> Store:
        """A new, empty index at ``folder`` pinned to ``pin``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cat = Catalogue(folder / CATALOGUE)
        try:
            cat.begin()
            cat.set_meta("pin", pin.to_json())
            cat.commit()
        finally:
            cat.close()
        pin_io.write_file(folder, pin)
        return cls(folder)

    @classmethod
    def open(cls, folder: str | Path) -> Store:
        """The index at ``folder`` (:class:`NotAnIndexError` when there is none)."""
        folder = Path(folder)
        if not cls.exists(folder):
            raise NotAnIndexError(f"{folder}: not a mimicry index (no {pin_io.FILENAME})")
        return cls(folder)

    def read_pin(self) -> Pin:
        """The committed pin (the catalogue's; ``manifest.json`` for indexes
        from before the pin moved there)."""
        text = self._reader().get_meta("pin")
        if text is None:
            return pin_io.read_file(self.folder)
        return Pin.from_json(text, self.folder / CATALOGUE)

    def close(self) -> None:
        with self._guard:
            for cat in self._connections:
                try:
                    cat.close()
                except Exception:  # noqa: BLE001 - a connection of a finished thread
                    pass
            self._connections.clear()
            self._local = threading.local()

    # -- reading ------------------------------------------------------------------
    def _reader(self) -> Catalogue:
        """This thread's own read connection."""
        cat = getattr(self._local, "catalogue", None)
        if cat is None:
            cat = Catalogue(self.folder / CATALOGUE, create=False)
            self._local.catalogue = cat
            with self._guard:
                self._connections.append(cat)
        return cat

    def revision(self) -> int:
        return int(self._reader().get_meta("revision", "0") or 0)

    def snapshot(self) -> Snapshot:
        """The last committed state (reloaded only when a write committed since)."""
        current = self._snapshot
        if current is not None and current.revision == self.revision():
            return current
        snap = self._load(self._reader(), strict_calibration=True)
        with self._guard:
            if self._snapshot is None or snap.revision >= self._snapshot.revision:
                self._snapshot = snap
        return snap

    def _load(self, cat: Catalogue, strict_calibration: bool) -> Snapshot:
        """Reads one committed state consistently (one read transaction), retrying
        while a writer replaces the vectors file it names."""
        s = self.settings
        for attempt in range(s.snapshot_retries + 1):
            cat.db.execute("BEGIN")
            try:
                generation = int(cat.get_meta("generation", "0") or 0)
                revision = int(cat.get_meta("revision", "0") or 0)
                text = cat.get_meta("pin")
                works = cat.works()
                try:
                    arrays = cat.get_arrays(CALIBRATION)
                except CorruptIndexError:
                    if strict_calibration:
                        raise
                    arrays = None
                try:
                    bg = cat.get_arrays(BACKGROUND)
                except CorruptIndexError:
                    if strict_calibration:
                        raise
                    bg = None
            finally:
                cat.db.execute("COMMIT")
            pin = Pin.from_json(text, self.folder / CATALOGUE) if text else pin_io.read_file(self.folder)
            try:
                index = vector_io.load(self.folder, generation, pin.dim)
            except FileNotFoundError:
                if attempt == s.snapshot_retries:
                    raise CorruptIndexError(f"{self.folder}: vectors of generation {generation} "
                                            f"are missing") from None
                time.sleep(s.snapshot_retry_s)
                continue
            ids, vecs = vector_io.all_vectors(index)
            by_id = {w.id: w for w in works}
            if set(by_id) != set(ids.tolist()):
                raise CorruptIndexError(f"{self.folder}: catalogue and vectors of generation "
                                        f"{generation} disagree")
            cal = None if arrays is None else Calibration.from_arrays(arrays)
            background = None if bg is None else bg.get("vectors")
            return Snapshot.build(vecs, ids, by_id, generation=generation, revision=revision,
                                  calibration=cal, background=background, pin=pin, folder=self.folder)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- writing -------------------------------------------------------------------
    @contextmanager
    def writer(self) -> Iterator[Writer]:
        """Exclusive write access (waits up to ``lock_wait_s``, then :class:`LockedError`)."""
        s = self.settings
        with self._lock.hold(s.lock_wait_s, s.retry_after_s):
            cat = Catalogue(self.folder / CATALOGUE)
            try:
                w = Writer(self, cat)
                vector_io.remove_stale(self.folder, w.generation)
                yield w
                if w.pin_changed:
                    pin_io.write_file(self.folder, w.pin)
            finally:
                cat.close()


class Writer:
    """What a holder of the write lock may do. Every method commits on its own,
    atomically; read :meth:`snapshot` for the state after them."""

    def __init__(self, store: Store, catalogue: Catalogue) -> None:
        self.store = store
        self.folder = store.folder
        self.catalogue = catalogue
        self.pin_changed = False
        self._reload()

    def _reload(self) -> None:
        self._snapshot = self.store._load(self.catalogue, strict_calibration=False)
        self.generation = self._snapshot.generation
        self.pin: Pin = self._snapshot.pin  # type: ignore[assignment]
        self._index = vector_io.load(self.folder, self.generation, self.pin.dim)

    def snapshot(self) -> Snapshot:
        """The committed state as this writer leaves it so far."""
        return self._snapshot

    def works(self, artist: str | None = None) -> list[Work]:
        return self.catalogue.works(artist)

    def reconstruct(self, ids: Sequence[int]) -> np.ndarray:
        return vector_io.reconstruct(self._index, list(ids))

    @contextmanager
    def _transaction(self) -> Iterator[Catalogue]:
        cat = self.catalogue
        cat.begin()
        try:
            yield cat
            cat.bump_revision()
            cat.commit()
        except BaseException:
            cat.rollback()
            raise

    def commit(self, add: Sequence[tuple[NewWork, np.ndarray]], remove_ids: Sequence[int]) -> None:
        """Adds and removes works as one transaction: rows, vectors and generation
        commit together or not at all."""
        if not add and not remove_ids:
            return
        try:
            with self._transaction() as cat:
                cat.delete_works(remove_ids)
                new_ids = [cat.add_work(w.artist, w.path, w.sha256, w.size, w.mtime_ns) for w, _ in add]
                vector_io.remove(self._index, list(remove_ids))
                if add:
                    vector_io.add(self._index, np.stack([v for _, v in add]), new_ids)
                generation = self.generation + 1
                vector_io.write(self.folder, generation, self._index)
                cat.set_meta("generation", str(generation))
        except BaseException:
            self._reload()  # back to the committed state
            raise
        vector_io.remove_stale(self.folder, generation)
        log.debug("committed generation %d", generation)
        self._reload()

    def replace_all(self, pin: Pin, ids: Sequence[int], vectors: np.ndarray, drop: Sequence[int]) -> None:
        """Re-pins the index: the works ``ids`` get ``vectors`` (embedded the new
        way), the works ``drop`` go, and calibration and background (embedded
        the old way) are dropped, all in one commit."""
        index = vector_io.new_index(pin.dim)
        vector_io.add(index, vectors, list(ids))
        generation = self.generation + 1
        try:
            with self._transaction() as cat:
                cat.delete_works(drop)
                cat.delete_artists_without_works()
                cat.delete_blob(CALIBRATION)
                cat.delete_blob(BACKGROUND)
                vector_io.write(self.folder, generation, index)
                cat.set_meta("generation", str(generation))
                cat.set_meta("pin", pin.to_json())
        except BaseException:
            self._reload()
            raise
        vector_io.remove_stale(self.folder, generation)
        self.pin_changed = True
        self._reload()

    def touch_work(self, work_id: int, size: int, mtime_ns: int) -> None:
        with self._transaction() as cat:
            cat.touch_work(work_id, size, mtime_ns)

    def delete_artists_without_works(self) -> None:
        with self._transaction() as cat:
            cat.delete_artists_without_works()
        self._reload()

    def delete_artist(self, name: str) -> None:
        with self._transaction() as cat:
            cat.delete_artist(name)
        self._reload()

    def artist_exists(self, name: str) -> bool:
        return self.catalogue.artist_id(name) is not None

    def set_calibration(self, calibration: Calibration | None) -> None:
        with self._transaction() as cat:
            if calibration is None:
                cat.delete_blob(CALIBRATION)
            else:
                cat.set_arrays(CALIBRATION, calibration.to_arrays())
        self._reload()

    def set_background(self, vectors: np.ndarray) -> None:
        with self._transaction() as cat:
            cat.set_arrays(BACKGROUND, {"vectors": np.asarray(vectors, dtype=np.float32)})
        self._reload()
