"""Lookback: when an artist registers or adds works, the recorded history is
screened again for them, from the stored vectors (nothing is re-embedded),
under the index's calibration as it is now.

- Single uploads (scans of kind ``image``) get the image test: an image now
  flagged as the artist opens (or joins) its upload's case, ``source``
  ``lookback``, tier ``flagged``.
- Models' sample sets (scans of kind ``model``) get the model test on the
  stored sample vectors (the rule :func:`mimicry.scanning.judge_model`
  applies): the artist at tier ``imitates`` or ``review`` opens (or joins)
  the model's case.

Promises:

- Exact: an image opens a case exactly when a scan of it now would flag it as
  the artist, and a model exactly when a scan of its samples would put the
  artist at a tier (:mod:`mimicry.moderation.rescreen`: the full image test
  runs only where a cheap bound says an image could be flagged).
- Progress: one ``lookbacks`` row per run (``queued``, ``running``,
  ``finished`` or ``failed``; ``done`` of ``total`` vectors, cases ``opened``,
  the ``error``), committed with the cases each stretch opens; a
  ``lookback.finished`` event when it ends, whichever way.
- Evidence: a case a lookback opens or joins points at a scan recording the
  lookback's own verdict: a copy of the recorded scan (its kind, hub ids,
  time, images and previews; no request id) whose result is re-judged from the
  stored vectors against the index now (:func:`_rejudged`), marked
  ``lookback`` (its id, artist and when). Only scans that open or join a case
  are re-judged; copies are never screened again (their originals are), and
  they expire and are purged with their originals (the same time and uploader).
- A decided case is never reopened (:func:`mimicry.moderation.cases.open_case`),
  and gets no copy.
- Runs queue behind one another (one at a time per process): a lookback is
  CPU work on the service's cores.
- Each run belongs to the process that queued it (``owner``): a process
  starting on the same folder takes over only the runs of processes that
  are gone (:func:`interrupted`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mimicry.errors import NotFoundError
from mimicry.moderation import events, owners
from mimicry.moderation.cases import open_case
from mimicry.moderation.db import ModerationDB
from mimicry.moderation.history import HubIds, image_tier, insert_images, insert_scan
from mimicry.moderation.rescreen import ModelTest, model_tiers, rejudged_images, rejudged_model, screen_images

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.index import StyleIndex
    from mimicry.store.snapshot import Snapshot

log = logging.getLogger(__name__)

STATES = ("queued", "running", "finished", "failed")
#: Vectors read, bounded and committed at a time.
STRETCH = 8192
_ONE_AT_A_TIME = threading.Lock()
#: A scan as recorded by the service, not a lookback's re-judged copy of one.
_ORIGINAL = "json_extract(s.result, '$.lookback') IS NULL"


@dataclass
class Lookback:
    """One re-screening of the history for ``artist``."""

    id: int
    artist: str
    state: str
    started_at: float
    finished_at: float | None
    done: int
    total: int
    opened: int
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = "id, artist, state, started_at, finished_at, done, total, opened, error"


def get(mdb: ModerationDB, lookback_id: int) -> Lookback:
    """Lookback ``lookback_id``; :class:`NotFoundError` when there is none."""
    rows = mdb.read(f"SELECT {_COLUMNS} FROM lookbacks WHERE id=?", (lookback_id,))
    if not rows:
        raise NotFoundError(f"no lookback {lookback_id}")
    return Lookback(*rows[0])


def listed(mdb: ModerationDB, artist: str | None = None, after: int = 0, limit: int = 50
           ) -> tuple[list[Lookback], int | None]:
    """Lookbacks (of ``artist`` when given), oldest first from id ``after``;
    (lookbacks, the ``after`` of the next page or None)."""
    where, args = "id > ?" + ("" if artist is None else " AND artist = ?"), [after]
    if artist is not None:
        args.append(artist)
    rows = mdb.read(f"SELECT {_COLUMNS} FROM lookbacks WHERE {where} ORDER BY id LIMIT ?", [*args, limit + 1])
    out = [Lookback(*r) for r in rows[:limit]]
    return out, (out[-1].id if len(rows) > limit else None)


def begin(mdb: ModerationDB, artist: str) -> int:
    """A new lookback for ``artist``, queued, owned by this process
    (:func:`mimicry.moderation.owners.this_process`); its id."""
    owner = owners.this_process(mdb.folder)
    with mdb.transaction() as db:
        cur = db.execute("INSERT INTO lookbacks(artist, state, started_at, owner) VALUES(?, 'queued', ?, ?)",
                         (artist, time.time(), owner))
        return int(cur.lastrowid)


# -- a run over the history -----------------------------------------------------------
def _image_stretches(mdb: ModerationDB, dim: int, since: float):
    """(rows read, scan ids, vectors) of recorded single-upload images, in
    rowid order, :data:`STRETCH` at a time; vectors of scans recorded before
    ``since`` (the index's pin: another model or recipe) are left out."""
    after = 0
    while True:
        rows = mdb.read("SELECT i.rowid, i.scan_id, i.vector, s.at FROM scan_images i JOIN scans s "
                        f"ON s.id = i.scan_id WHERE s.kind = 'image' AND {_ORIGINAL} AND i.rowid > ? ORDER BY i.rowid LIMIT ?",
                        (after, STRETCH))
        if not rows:
            return
        after = rows[-1][0]
        keep = [r for r in rows if len(r[2]) == 4 * dim and r[3] >= since]
        vecs = np.frombuffer(b"".join(r[2] for r in keep), np.float32).reshape(len(keep), dim)
        yield len(rows), np.array([r[1] for r in keep], np.int64), vecs


def pinned_at(snapshot: Snapshot) -> float:
    """When the index's model and recipe were pinned: vectors recorded before
    came from another (a rebuild re-embeds the works, not the history)."""
    return snapshot.pin.created_at if snapshot.pin is not None else 0.0


def _count(mdb: ModerationDB, kind: str) -> int:
    return int(mdb.read(f"SELECT count(*) FROM scan_images i JOIN scans s ON s.id = i.scan_id "
                        f"WHERE s.kind = ? AND {_ORIGINAL}", (kind,))[0][0])


def _progress(db: Any, lookback_id: int, done: int, opened: int) -> None:
    db.execute("UPDATE lookbacks SET done = done + ?, opened = opened + ? WHERE id = ?", (done, opened, lookback_id))


def _rejudged(db: Any, snapshot: Snapshot, test: ModelTest, lookback_id: int, scan_id: int, tier: str,
              artist: str) -> int:
    """Records the lookback's verdict on scan ``scan_id`` as a scan of its own
    (module docstring: the result a scan would give now, from the stored
    vectors; the images copied); the new scan's id."""
    at, kind, upload_id, model_id, uploader, old = db.execute(
        "SELECT at, kind, upload_id, model_id, uploader, result FROM scans WHERE id=?", (scan_id,)).fetchone()
    imgs = db.execute("SELECT position, sha256, name, vector, preview FROM scan_images WHERE scan_id=? "
                      "ORDER BY position", (scan_id,)).fetchall()
    vecs = np.frombuffer(b"".join(r[3] for r in imgs), np.float32).reshape(len(imgs), snapshot.dim)
    names = [r[2] for r in imgs]
    result: dict[str, Any] = {"lookback": {"id": lookback_id, "artist": artist, "at": time.time()}}
    if kind == "image":
        results = rejudged_images(snapshot, vecs, names, [r[1] for r in imgs], test)
        result["results"] = [r.to_dict(paths=False) for r in results]
        marks = [(image_tier(r), r.artist) for r in results]
    else:
        verdict, recorded = rejudged_model(snapshot, vecs, names, test), json.loads(old)
        result.update(verdict.to_dict(paths=False), inputs=recorded.get("inputs", list(range(len(imgs)))),
                      skipped=recorded.get("skipped", []))
        support = verdict.supported_by()
        marks = [("supports" if i in support else "sample", support.get(i)) for i in range(len(imgs))]
    new = insert_scan(db, kind, HubIds(upload_id, model_id, uploader), None, tier, artist, result, at)
    insert_images(db, new, [(sha, name, vec, preview, t, a) for (_, sha, name, vec, preview), (t, a) in zip(imgs, marks)])
    return new


def _open(db: Any, snapshot: Snapshot, test: ModelTest, lookback_id: int, kind: str, key: str, scan_id: int,
          tier: str, artists: list[str]) -> int:
    """Opens or joins case ``kind``/``key`` with the lookback's re-judged copy
    of scan ``scan_id`` (none for a decided case); whether it was opened now."""
    state = db.execute("SELECT state FROM cases WHERE kind=? AND key=?", (kind, key)).fetchone()
    if state is not None and state[0] != "open":  # decided: never reopened
        return 0
    new = _rejudged(db, snapshot, test, lookback_id, scan_id, tier, artists[0])
    return int(open_case(db, kind, key, new, tier, artists, source="lookback")[1])


def _open_uploads(mdb: ModerationDB, snapshot: Snapshot, test: ModelTest, lookback_id: int, artist: str,
                  scan_ids: np.ndarray, seen: int) -> int:
    """Opens or joins the cases of the uploads of ``scan_ids`` (flagged as
    ``artist``) and counts ``seen`` vectors done, in one transaction; cases opened."""
    opened = 0
    with mdb.transaction() as db:
        for scan_id in sorted(set(scan_ids.tolist())):
            upload = db.execute("SELECT upload_id FROM scans WHERE id=?", (scan_id,)).fetchone()
            if upload is None:  # expired or purged meanwhile
                continue
            key = upload[0] or f"scan:{scan_id}"
            opened += _open(db, snapshot, test, lookback_id, "upload", key, scan_id, "flagged", [artist])
        _progress(db, lookback_id, seen, opened)
    return opened


def _model_sets(mdb: ModerationDB, dim: int, since: float):
    """Recorded models, a stretch of about :data:`STRETCH` samples at a time:
    lists of (scan id, model id, sample vectors, vectors counted); a model
    recorded before ``since`` has no vectors here."""
    models = mdb.read(f"SELECT id, model_id, at FROM scans AS s WHERE kind = 'model' AND {_ORIGINAL} ORDER BY id")
    batch: list[tuple[int, str | None, np.ndarray, int]] = []
    for scan_id, model_id, at in models:
        rows = mdb.read("SELECT vector FROM scan_images WHERE scan_id=? ORDER BY position", (scan_id,))
        keep = [v for (v,) in rows if len(v) == 4 * dim and at >= since]
        batch.append((scan_id, model_id, np.frombuffer(b"".join(keep), np.float32).reshape(len(keep), dim),
                      len(rows)))
        if sum(len(b[2]) for b in batch) >= STRETCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _screen_models(mdb: ModerationDB, snapshot: Snapshot, lookback_id: int, artist: str, test: ModelTest) -> int:
    """The model test on every recorded model's samples; cases opened."""
    opened = 0
    for batch in _model_sets(mdb, snapshot.dim, pinned_at(snapshot)):
        tiers = model_tiers(snapshot, [b[2] for b in batch], test)
        with mdb.transaction() as db:
            new = 0
            for (scan_id, model_id, _, _), (tier, artists) in zip(batch, tiers):
                if artist in artists and db.execute("SELECT 1 FROM scans WHERE id=?", (scan_id,)).fetchone():
                    new += _open(db, snapshot, test, lookback_id, "model", model_id or f"scan:{scan_id}",
                                 scan_id, tier, artists)
            _progress(db, lookback_id, sum(b[3] for b in batch), new)
        opened += new
    return opened


def run(mdb: ModerationDB, snapshot: Snapshot, lookback_id: int, test: ModelTest = ModelTest()) -> Lookback:
    """Runs lookback ``lookback_id`` (made by :func:`begin`) on this thread
    against ``snapshot``; ends with its state and a ``lookback.finished`` event."""
    artist = get(mdb, lookback_id).artist
    with mdb.transaction() as db:
        db.execute("UPDATE lookbacks SET state='running', total=? WHERE id=?",
                   (_count(mdb, "image") + _count(mdb, "model"), lookback_id))
    state, error = "finished", None
    try:
        if artist not in snapshot.artists:  # no works: nothing is like them
            with mdb.transaction() as db:
                db.execute("UPDATE lookbacks SET done=total WHERE id=?", (lookback_id,))
        else:
            for seen, scan_ids, vecs in _image_stretches(mdb, snapshot.dim, pinned_at(snapshot)):
                hit = screen_images(snapshot, vecs, artist)
                _open_uploads(mdb, snapshot, test, lookback_id, artist, scan_ids[hit], seen)
            _screen_models(mdb, snapshot, lookback_id, artist, test)
    except Exception as exc:  # noqa: BLE001 - a failed run says why in its row
        log.exception("lookback %s for %s failed", lookback_id, artist)
        state, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    with mdb.transaction() as db:
        db.execute("UPDATE lookbacks SET state=?, error=?, finished_at=? WHERE id=?",
                   (state, error, time.time(), lookback_id))
        row = db.execute("SELECT done, total, opened FROM lookbacks WHERE id=?", (lookback_id,)).fetchone()
        events.enqueue(db, "lookback.finished", {"lookback": lookback_id, "artist": artist, "state": state,
                                                 "done": row[0], "total": row[1], "opened": row[2],
                                                 "error": error})
    return get(mdb, lookback_id)


def start(mdb: ModerationDB, ix: StyleIndex, artist: str) -> tuple[int, threading.Thread]:
    """Queues a lookback for ``artist`` and runs it on a thread of its own
    (after any running one), against the index as committed when it starts;
    (its id, the thread)."""
    s = ix.settings
    test = ModelTest(s.alpha, s.review_alpha, (s.min_samples, s.max_samples), s.top, s.evidence)
    lookback_id = begin(mdb, artist)

    def _work() -> None:
        with _ONE_AT_A_TIME:
            try:
                snapshot = ix.snapshot()
            except Exception as exc:  # noqa: BLE001 - an unreadable index fails the run, visibly
                _fail(mdb, lookback_id, exc)
                return
            run(mdb, snapshot, lookback_id, test)
        mdb.close()

    thread = threading.Thread(target=_work, name=f"lookback-{lookback_id}", daemon=True)
    thread.start()
    return lookback_id, thread


def _fail(mdb: ModerationDB, lookback_id: int, exc: BaseException) -> None:
    with mdb.transaction() as db:
        db.execute("UPDATE lookbacks SET state='failed', error=?, finished_at=? WHERE id=?",
                   (f"{type(exc).__name__}: {exc}"[:500], time.time(), lookback_id))
        artist = db.execute("SELECT artist FROM lookbacks WHERE id=?", (lookback_id,)).fetchone()[0]
        events.enqueue(db, "lookback.finished", {"lookback": lookback_id, "artist": artist, "state": "failed",
                                                 "error": str(exc)[:500]})


def interrupted(mdb: ModerationDB) -> list[str]:
    """Marks lookbacks that a stopped process left queued or running as
    failed (``interrupted``) and returns their artists, to start again.
    Lookbacks of a process still running (another service on the same
    folder) are left to it (:func:`mimicry.moderation.owners.alive`)."""
    with mdb.transaction() as db:
        rows = db.execute("SELECT id, artist, owner FROM lookbacks WHERE state IN ('queued', 'running')").fetchall()
        gone = [(i, a) for i, a, owner in rows if not owners.alive(mdb.folder, owner)]
        db.executemany("UPDATE lookbacks SET state='failed', error='interrupted: the service stopped', "
                       "finished_at=? WHERE id=?", [(time.time(), i) for i, _ in gone])
    owners.sweep(mdb.folder)  # the files of ended processes whose lookbacks all finished
    return sorted({a for _, a in gone})
