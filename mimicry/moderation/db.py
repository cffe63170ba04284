"""The moderation database: what a hub scanned and what its moderators decided.

``moderation.sqlite`` in the index folder, apart from the catalogue, so that
recording a scan never waits for the index's write lock (the two are never
written in one transaction). WAL journal, ``synchronous=FULL``: a row is on
disk when its transaction returns, and a kill at any moment leaves the last
committed state. Every write goes through :meth:`ModerationDB.transaction`
(``BEGIN IMMEDIATE``: one writer at a time, readers never blocked).

Tables:

- ``scans``: one row per recorded ``/v1/scan`` or ``/v1/scan-model`` request:
  time, the hub's ids (``upload_id``, ``model_id``, ``uploader``), kind
  (``image`` or ``model``), tier, artist, the result as JSON;
- ``scan_images``: each image of a scan: sha256, name, vector (float32 bytes),
  its preview's file name, its own tier and artist (images of a scan), and
  whether it was flagged;
- ``cases``: one per upload (``kind`` upload) or model (``kind`` model), keyed
  by the hub's id (or ``scan:<id>`` when none was given): state, tier, the
  strongest artist and all of them (a JSON list);
- ``decisions``: every moderator's decision on a case, in order;
- ``moderators``: names and their tokens' sha256;
- ``webhooks``, ``events`` and ``deliveries``: the registered endpoints, the
  durable outbox of events (committed with what they announce) and each
  event's delivery to each endpoint;
- ``lookbacks``: each re-screening of the history for an artist, with progress
  and the process running it (``owner``).

An older database is migrated on open, in one transaction (``ADDED_COLUMNS``);
a newer one is refused with a clear error.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mimicry.errors import PinMismatchError

FILENAME = "moderation.sqlite"
#: Bumped with any change to the tables below (checked on open); indices are
#: made on every open, whatever the version.
VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('image', 'model')),
    upload_id TEXT, model_id TEXT, uploader TEXT, request_id TEXT,
    tier TEXT NOT NULL,
    artist TEXT,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scans_at ON scans(at);
CREATE INDEX IF NOT EXISTS scans_uploader ON scans(uploader);
CREATE INDEX IF NOT EXISTS scans_upload_id ON scans(upload_id);
CREATE INDEX IF NOT EXISTS scans_model_id ON scans(model_id);
CREATE TABLE IF NOT EXISTS scan_images (
    scan_id INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    vector BLOB NOT NULL,
    preview TEXT,
    tier TEXT NOT NULL,
    artist TEXT,
    PRIMARY KEY (scan_id, position)
);
CREATE INDEX IF NOT EXISTS scan_images_preview ON scan_images(preview);
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('upload', 'model')),
    key TEXT NOT NULL,
    scan_id INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'confirmed', 'dismissed', 'escalated')),
    tier TEXT NOT NULL,
    artist TEXT NOT NULL,
    artists TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'scan',
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (kind, key)
);
CREATE INDEX IF NOT EXISTS cases_state ON cases(state, opened_at);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    at REAL NOT NULL,
    moderator TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('confirm', 'dismiss', 'escalate')),
    note TEXT NOT NULL DEFAULT '',
    request_id TEXT
);
CREATE TABLE IF NOT EXISTS moderators (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    token_sha256 TEXT NOT NULL UNIQUE,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    created INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    delivered_at REAL,
    gave_up_at REAL,
    last_error TEXT,
    PRIMARY KEY (event_id, webhook_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(delivered_at, gave_up_at, next_at);
CREATE TABLE IF NOT EXISTS lookbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    artist TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'running',
    started_at REAL NOT NULL,
    finished_at REAL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    opened INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    owner TEXT
);
"""

#: Columns added after a table was first made: (table, column, its definition), applied
#: on open wherever the table lacks the column (whatever the version row says: a
#: version 1 database, or one whose version row a kill kept from being written).
ADDED_COLUMNS = [
    ("lookbacks", "owner", "TEXT"),  # version 2: the process running it (mimicry.moderation.owners)
]


class ModerationDB:
    """The moderation database of the index folder ``folder`` (created on first
    open). One connection per thread; safe to share between threads."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / FILENAME
        self._local = threading.local()
        with self.transaction() as db:
            found = db.execute("SELECT name FROM sqlite_master WHERE name='meta'").fetchone()
            version = db.execute("SELECT value FROM meta WHERE key='version'").fetchone() if found else None
            if version is not None and int(version[0]) > VERSION:
                raise PinMismatchError(f"{self.path}: moderation database version {version[0]} is newer "
                                       f"than this mimicry reads ({VERSION}); upgrade mimicry")
            for statement in SCHEMA.split(";"):  # idempotent: every table IF NOT EXISTS
                if statement.strip():
                    db.execute(statement)
            for table, column, definition in ADDED_COLUMNS:
                if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('version', ?)", (str(VERSION),))

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (made on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back on any error."""
        db = self.connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def read(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        """Rows of one query, from the last committed state."""
        return self.connect().execute(sql, args).fetchall()

    def close(self) -> None:
        """Closes this thread's connection (others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
