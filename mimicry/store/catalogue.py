"""The SQLite catalogue: artists, their works, and which vector belongs to which work.

Promises:
- A work's ``id`` is its vector's id in the segments; ids are never reused.
- ``meta['segments']`` lists the vector segments that hold the committed rows
  (:mod:`mimicry.store.segments`) and ``meta['generation']`` counts the commits
  that changed vectors; both change in the same transaction as the rows.
- ``meta['pin']`` is the authoritative pin; ``meta['revision']`` grows with every
  committed write, so readers know when their snapshot is out of date.
- ``meta['ann']`` names the approximate index in use (:mod:`mimicry.store.ann`),
  committed with the rows it was built from, so one read transaction reads
  the rows, the vectors' segments and the index that go together.
- The tables are those of the pinned schema version; a change of format goes
  through :mod:`mimicry.store.migrations`, never a patch on open.
- Arrays (calibration, background vectors) are stored as ``.npz`` blobs of plain
  numeric or fixed-width text arrays and always loaded with pickling off: a blob
  holding a pickled object is refused (:class:`CorruptIndexError`), never run.
"""

from __future__ import annotations

import io
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mimicry.errors import CorruptIndexError

#: Names of what the catalogue stores beside its rows: blobs of arrays, and meta keys.
CALIBRATION, BACKGROUND = "calibration", "background"
SEGMENTS, SEGMENT_SEQ = "segments", "segment_seq"
#: The list of segments the last commit replaced: its files stay one more commit,
#: so a reader that read that list while the commit landed can still load them.
PREVIOUS_SEGMENTS = "previous_segments"
#: The approximate index in use, and the one the last install replaced (kept as segments are).
ANN, PREVIOUS_ANN = "ann", "previous_ann"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS artists (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    added_at REAL NOT NULL,
    token_sha256 TEXT,
    registered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS works (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    artist_id INTEGER NOT NULL REFERENCES artists(id),
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    added_at REAL NOT NULL,
    origin TEXT NOT NULL DEFAULT 'folder',
    runtime TEXT,
    UNIQUE (artist_id, path)
);
CREATE INDEX IF NOT EXISTS works_sha ON works(sha256);
CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    request_id TEXT,
    actor TEXT NOT NULL,
    actor_artist TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""

#: Where a work came from: a portfolio folder (``mimicry index``) or an upload
#: to the service (stored inside the index, named by hash).
FOLDER, UPLOAD = "folder", "upload"


@dataclass(frozen=True)
class Work:
    """One indexed image of one artist."""

    id: int
    artist: str
    path: str
    sha256: str
    size: int
    mtime_ns: int
    added_at: float
    origin: str = FOLDER
    runtime: str | None = None  # what ran the model for its vector (None: not recorded, schema 3)


@dataclass(frozen=True)
class AuditEntry:
    """One recorded write: who (``actor`` admin, artist or cli; and which
    artist), what, to what, when, in which request."""

    id: int
    at: float
    request_id: str | None
    actor: str
    actor_artist: str | None
    action: str
    target: str
    detail: str


class Catalogue:
    """Thin typed access to the catalogue database. Writes happen only between
    :meth:`begin` and :meth:`commit` (a writer's transactions,
    :mod:`mimicry.store.writer`), so rows and the vector generation commit together."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        """Opens the catalogue; ``create`` makes the file and tables where they are
        missing (writers), otherwise the file must exist (readers never create it).
        Raises :class:`CorruptIndexError` when the file is not a usable database."""
        self.path = Path(path)
        try:
            if create:
                self.db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                          check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(SCHEMA)
            else:
                self.db = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=30.0,
                                          isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA busy_timeout=30000")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise CorruptIndexError(f"{self.path}: not a usable catalogue ({exc})") from None

    def close(self) -> None:
        self.db.close()

    # -- meta -----------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def get_blob(self, name: str) -> bytes | None:
        row = self.db.execute("SELECT data FROM blobs WHERE name=?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def set_blob(self, name: str, data: bytes) -> None:
        self.db.execute(
            "INSERT INTO blobs(name, data) VALUES(?, ?) "
            "ON CONFLICT(name) DO UPDATE SET data=excluded.data",
            (name, sqlite3.Binary(data)),
        )

    def get_arrays(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``name`` (None if none), loaded with pickling off."""
        data = self.get_blob(name)
        if data is None:
            return None
        try:
            loaded = np.load(io.BytesIO(data), allow_pickle=False)
            if isinstance(loaded, np.ndarray):  # a bare .npy array
                return {"array": loaded}
            with loaded as z:
                return {k: z[k] for k in z.files}
        except ValueError as exc:
            raise CorruptIndexError(
                f"{self.path}: stored {name!r} holds data that would need unpickling "
                f"({exc}); refused: opening an index never runs code. "
                f"Redo it (`mimicry calibrate`) or re-index") from None
        except (OSError, EOFError) as exc:
            raise CorruptIndexError(f"{self.path}: stored {name!r} is unreadable ({exc})") from None

    def set_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Stores plain arrays under ``name`` (object arrays are refused)."""
        for key, arr in arrays.items():
            if np.asarray(arr).dtype == object:
                raise TypeError(f"{name}.{key}: object arrays are not stored")
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self.set_blob(name, buf.getvalue())

    def delete_blob(self, name: str) -> None:
        self.db.execute("DELETE FROM blobs WHERE name=?", (name,))

    def bump_revision(self) -> int:
        """Marks a committed change for readers; returns the new revision."""
        revision = int(self.get_meta("revision", "0") or 0) + 1
        self.set_meta("revision", str(revision))
        return revision

    # -- transactions ---------------------------------------------------------
    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    # -- artists and works ----------------------------------------------------
    def artist_id(self, name: str, create: bool = False, nocase: bool = False) -> int | None:
        """The artist's id (``nocase``: of a name equal to it but for ASCII case)."""
        row = self.db.execute("SELECT id FROM artists WHERE name=?" + " COLLATE NOCASE" * nocase,
                              (name,)).fetchone()
        if row:
            return int(row[0])
        if not create:
            return None
        cur = self.db.execute(
            "INSERT INTO artists(name, added_at) VALUES(?, ?)", (name, time.time())
        )
        return int(cur.lastrowid)

    def artist_counts(self) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT a.name, COUNT(w.id) FROM artists a LEFT JOIN works w "
            "ON w.artist_id=a.id GROUP BY a.id ORDER BY a.name"
        )
        return {name: int(n) for name, n in rows}

    def works(self, artist: str | None = None, ids: Sequence[int] | None = None) -> list[Work]:
        """Works by id: all, one ``artist``'s, or those of ``ids``."""
        sql = (
            "SELECT w.id, a.name, w.path, w.sha256, w.size, w.mtime_ns, w.added_at, w.origin, w.runtime "
            "FROM works w JOIN artists a ON a.id=w.artist_id"
        )
        args: tuple = ()
        if artist is not None:
            sql += " WHERE a.name=?"
            args = (artist,)
        elif ids is not None:
            out: list[Work] = []
            ids = [int(i) for i in ids]
            for start in range(0, len(ids), 500):  # under SQLite's bound-variable limit
                part = ids[start:start + 500]
                out += [Work(*row) for row in self.db.execute(
                    sql + f" WHERE w.id IN ({','.join('?' * len(part))}) ORDER BY w.id", part)]
            return out
        return [Work(*row) for row in self.db.execute(sql + " ORDER BY w.id", args)]

    def add_work(
        self, artist: str, path: str, sha256: str, size: int, mtime_ns: int, origin: str = FOLDER,
        runtime: str | None = None,
    ) -> int:
        aid = self.artist_id(artist, create=True)
        cur = self.db.execute(
            "INSERT INTO works(artist_id, path, sha256, size, mtime_ns, added_at, origin, runtime) "
            "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
            (aid, path, sha256, size, mtime_ns, time.time(), origin, runtime),
        )
        return int(cur.lastrowid)

    def set_runtime(self, ids: Sequence[int], runtime: str | None) -> None:
        """Records that ``runtime`` made the vectors of the works ``ids`` (a rebuild)."""
        self.db.executemany("UPDATE works SET runtime=? WHERE id=?", [(runtime, int(i)) for i in ids])

    # -- registered artists, tokens, audit ------------------------------------------
    def register_artist(self, name: str, token_sha256: str) -> None:
        """A registered artist (kept with no works), with the hash of their token."""
        self.db.execute("INSERT INTO artists(name, added_at, registered, token_sha256) VALUES(?, ?, 1, ?)",
                        (name, time.time(), token_sha256))

    def set_token(self, name: str, token_sha256: str) -> None:
        self.db.execute("UPDATE artists SET token_sha256=?, registered=1 WHERE name=?", (token_sha256, name))

    def token_sha256(self, name: str) -> str | None:
        row = self.db.execute("SELECT token_sha256 FROM artists WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def artist_with_token(self, token_sha256: str) -> str | None:
        """The registered artist whose token has this sha256, or None."""
        row = self.db.execute("SELECT name FROM artists WHERE token_sha256=? AND registered=1",
                              (token_sha256,)).fetchone()
        return row[0] if row else None

    def record(self, actor: str, actor_artist: str | None, action: str, target: str,
               detail: str = "", request_id: str | None = None) -> None:
        """Appends one audit row (inside the caller's transaction)."""
        self.db.execute("INSERT INTO audit(at, request_id, actor, actor_artist, action, target, detail) "
                        "VALUES(?, ?, ?, ?, ?, ?, ?)",
                        (time.time(), request_id, actor, actor_artist, action, target, detail))

    def audit(self, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        rows = self.db.execute("SELECT id, at, request_id, actor, actor_artist, action, target, detail "
                               "FROM audit WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        return [AuditEntry(*r) for r in rows]

    def touch_work(self, work_id: int, size: int, mtime_ns: int, sha256: str | None = None) -> None:
        """Records a work's file as seen again (size, mtime; sha256 when it changed)."""
        if sha256 is None:
            self.db.execute("UPDATE works SET size=?, mtime_ns=? WHERE id=?", (size, mtime_ns, work_id))
        else:
            self.db.execute("UPDATE works SET size=?, mtime_ns=?, sha256=? WHERE id=?",
                            (size, mtime_ns, sha256, work_id))

    def delete_works(self, ids: Iterable[int]) -> None:
        self.db.executemany("DELETE FROM works WHERE id=?", [(int(i),) for i in ids])

    def delete_artist(self, name: str) -> None:
        """Deletes the artist's row (their works must be gone already)."""
        self.db.execute("DELETE FROM artists WHERE name=?", (name,))

    def delete_artists_without_works(self) -> None:
        """Drops artists left with no works, except those registered through the service."""
        self.db.execute("DELETE FROM artists WHERE id NOT IN (SELECT DISTINCT artist_id FROM works) "
                        "AND registered = 0")
