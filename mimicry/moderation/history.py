"""Scan history: every scan a hub's service answers, recorded with the hub's
ids, each image's sha256, vector and a preview, the verdict, its tier and its
evidence, so that cases can be opened, shown and re-screened later.

Promises:

- :func:`record_images` and :func:`record_model` commit the scan, its images,
  the case it opens (if any) and that case's event in one transaction of the
  moderation database; a preview's file (``history/previews/<sha256>.jpg``,
  or ``.png`` for a PNG upload already that small, kept without its
  metadata; at most ``preview_side`` pixels on its long side) is complete on
  disk before the row naming it commits.
- :func:`expire` removes scans older than the retention (their cases and
  decisions with them) and previews no scan names any more;
  :func:`purge_uploader` removes everything of one uploader the same way.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from mimicry.moderation.cases import open_case
from mimicry.moderation.db import ModerationDB
from mimicry.store.durable import write_atomically
from mimicry.results import ModelVerdict, ScanResult

PREVIEWS = Path("history") / "previews"


@dataclass(frozen=True)
class HubIds:
    """The hub's own names for what was scanned (any may be None)."""

    upload_id: str | None = None
    model_id: str | None = None
    uploader: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What recording a scan did: the scan's id, and the case it opened or
    joined (None when nothing was flagged) and whether it was opened now."""

    scan_id: int
    case_id: int | None = None
    opened: bool = False


def image_tier(result: ScanResult) -> str:
    """An image's tier in the history: ``flagged``, ``not-flagged``,
    ``uncalibrated``, ``cannot-flag`` or ``error`` (its verdict's kind)."""
    return result.verdict_words()[0]


#: The chunks a PNG preview keeps: pixels and colour, never text, EXIF or times.
PNG_CHUNKS = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT"}


def png_without_metadata(data: bytes) -> bytes | None:
    """A PNG's bytes with only the chunks of :data:`PNG_CHUNKS` (its first
    frame when animated), or None when they are not a whole PNG."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    out, i = [data[:8]], 8
    while i + 12 <= len(data):
        end = i + 12 + int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        if end > len(data):
            return None
        if kind in PNG_CHUNKS:
            out.append(data[i:end])
        if kind == b"IEND":
            return b"".join(out)
        i = end
    return None


def _preview_bytes(name: str, data: bytes, side: int) -> tuple[str, bytes] | None:
    """(suffix, bytes) of an upload's preview: a PNG already at most ``side``
    pixels is kept as it is without its metadata (no decode, no loss); any
    other image is decoded (a JPEG at the smallest scale still at least
    ``side``), reduced and written as a JPEG. None when it cannot be decoded."""
    from mimicry.images import ImageBytes, check_header, reduced_jpeg

    try:
        if data.startswith(b"\x89PNG") and max(check_header(ImageBytes(name, data))) <= side:
            kept = png_without_metadata(data)
            if kept is not None:
                return ".png", kept
        return ".jpg", reduced_jpeg(ImageBytes(name, data), side, quality=88)
    except Exception:  # noqa: BLE001 - an unreadable upload has no preview
        return None


def write_preview(folder: Path, sha256: str, data: bytes, side: int) -> str | None:
    """The preview of an upload (at most ``side`` pixels on its long side:
    ``<sha256>.jpg``, or ``<sha256>.png`` for a PNG that small, kept without
    its metadata), written atomically and durably once per sha256; its name,
    or None when the bytes cannot be decoded."""
    for suffix in (".jpg", ".png"):
        if (folder / PREVIEWS / f"{sha256}{suffix}").exists():
            return f"{sha256}{suffix}"
    made = _preview_bytes(f"{sha256}", data, side)
    if made is None:
        return None
    name = f"{sha256}{made[0]}"
    target = folder / PREVIEWS / name
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, made[1])
    return name


def _with_previews(folder: Path, rows: list[tuple], uploads: Sequence[bytes], side: int) -> list[tuple]:
    """``rows`` (preview name at index 3), each preview that a purge or sweep
    removed since :func:`write_preview` found it written again: called inside
    the recording's write transaction, and those remove a file only inside a
    write transaction after checking that no scan names it, so once this
    transaction commits, every preview it names exists."""
    out = []
    for row, data in zip(rows, uploads):
        preview = row[3]
        if preview is not None and not (folder / PREVIEWS / preview).exists():
            preview = write_preview(folder, row[0], data, side)
        out.append((*row[:3], preview, *row[4:]))
    return out


def insert_scan(db: Any, kind: str, ids: HubIds, request_id: str | None, tier: str, artist: str | None,
                result: dict[str, Any], at: float | None = None) -> int:
    """Inside a write transaction: one ``scans`` row (recorded now, or ``at``); its id."""
    cur = db.execute("INSERT INTO scans(at, kind, upload_id, model_id, uploader, request_id, tier, artist, "
                     "result) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (time.time() if at is None else at, kind, ids.upload_id, ids.model_id, ids.uploader,
                      request_id, tier, artist, json.dumps(result, ensure_ascii=False)))
    return int(cur.lastrowid)


def insert_images(db: Any, scan_id: int,
                  rows: Sequence[tuple[str, str, np.ndarray | bytes, str | None, str, str | None]]) -> None:
    """Inside a write transaction: the images of scan ``scan_id`` in order, each
    (sha256, name, vector (float32, or its bytes as stored), preview, tier, artist)."""
    db.executemany("INSERT INTO scan_images(scan_id, position, sha256, name, vector, preview, tier, artist) "
                   "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                   [(scan_id, i, sha, name, vec if isinstance(vec, bytes) else np.asarray(vec, np.float32).tobytes(),
                     preview, tier, artist) for i, (sha, name, vec, preview, tier, artist) in enumerate(rows)])


def record_images(mdb: ModerationDB, results: Sequence[ScanResult], uploads: Sequence[bytes], ids: HubIds,
                  request_id: str | None = None, preview_side: int = 1024) -> Recorded:
    """Records one ``/v1/scan`` request (``results`` and the uploads' bytes, in
    the same order; unreadable images are not recorded) and opens its case
    when an image is flagged: one case per upload id (or per scan without one),
    its artists those images are flagged as, the most often flagged first."""
    rows, flagged, kept = [], [], []
    for r, data in zip(results, uploads):
        if r.error is not None or r.vector is None or r.sha256 is None:
            continue
        preview = write_preview(mdb.folder, r.sha256, data, preview_side)
        rows.append((r.sha256, r.image, r.vector, preview, image_tier(r), r.artist))
        kept.append(data)
        if r.artist is not None:
            flagged.append(r.artist)
    artists = sorted(set(flagged), key=lambda a: (-flagged.count(a), a))
    tier = "flagged" if flagged else (rows[0][4] if rows else "error")
    summary = {"results": [r.to_dict(paths=False) for r in results]}
    with mdb.transaction() as db:
        scan_id = insert_scan(db, "image", ids, request_id, tier, artists[0] if artists else None, summary)
        insert_images(db, scan_id, _with_previews(mdb.folder, rows, kept, preview_side))
        if not artists:
            return Recorded(scan_id)
        case_id, opened = open_case(db, "upload", ids.upload_id or f"scan:{scan_id}", scan_id, "flagged", artists)
    return Recorded(scan_id, case_id, opened)


def model_tier(verdict: ModelVerdict) -> tuple[str, list[str]]:
    """A model verdict's tier (``imitates``, ``review`` or ``none``) and its artists, strongest first."""
    return tier_of(verdict.artists, verdict.review)


def tier_of(imitates: Sequence[str], review: Sequence[str]) -> tuple[str, list[str]]:
    """The tier of a model whose test put ``imitates`` (strongest first) at
    ``imitates`` and ``review`` at ``review``, and its artists, strongest first."""
    if imitates:
        return "imitates", list(imitates) + [a for a in review if a not in imitates]
    if review:
        return "review", list(review)
    return "none", []


def record_model(mdb: ModerationDB, verdict: ModelVerdict, uploads: Sequence[bytes], ids: HubIds,
                 request_id: str | None = None, preview_side: int = 1024) -> Recorded:
    """Records one ``/v1/scan-model`` request (the verdict; ``uploads`` are the
    samples' bytes in input order) and opens the model's case at tier
    ``imitates`` or ``review``: one case per model id (or per scan without one)."""
    tier, artists = model_tier(verdict)
    support = verdict.supported_by()
    rows, kept = [], []
    for i, (name, pos) in enumerate(zip(verdict.samples, verdict.inputs)):
        vec = verdict.vectors[i]
        sha = hashlib.sha256(uploads[pos]).hexdigest()
        preview = write_preview(mdb.folder, sha, uploads[pos], preview_side)
        rows.append((sha, name, vec, preview, "supports" if i in support else "sample", support.get(i)))
        kept.append(uploads[pos])
    with mdb.transaction() as db:
        scan_id = insert_scan(db, "model", ids, request_id, tier, artists[0] if artists else None,
                               verdict.to_dict(paths=False))
        insert_images(db, scan_id, _with_previews(mdb.folder, rows, kept, preview_side))
        if not artists:
            return Recorded(scan_id)
        case_id, opened = open_case(db, "model", ids.model_id or f"scan:{scan_id}", scan_id, tier, artists)
    return Recorded(scan_id, case_id, opened)


def _drop_unreferenced_previews(mdb: ModerationDB, names: Iterable[str]) -> int:
    """Unlinks the preview files among ``names`` that no recorded image names,
    checked and unlinked inside one write transaction, so that a scan being
    recorded either commits first (and its preview stays) or finds its
    preview gone inside its own transaction and writes it again."""
    gone = 0
    with mdb.transaction() as db:
        for name in names:
            if db.execute("SELECT 1 FROM scan_images WHERE preview=? LIMIT 1", (name,)).fetchone() is None:
                try:
                    (mdb.folder / PREVIEWS / name).unlink()
                    gone += 1
                except FileNotFoundError:
                    pass
    return gone


def _delete_scans(mdb: ModerationDB, where: str, args: tuple) -> int:
    with mdb.transaction() as db:
        names = {r[0] for r in db.execute(f"SELECT DISTINCT i.preview FROM scan_images i JOIN scans s "
                                          f"ON s.id = i.scan_id WHERE {where} AND i.preview IS NOT NULL", args)}
        n = db.execute(f"DELETE FROM scans AS s WHERE {where}", args).rowcount
    _drop_unreferenced_previews(mdb, names)
    return n


def expire(mdb: ModerationDB, days: float, now: float | None = None) -> int:
    """Removes scans older than ``days`` (with their images, cases and
    decisions) and their previews, events older than that whose every
    delivery is done (delivered or given up), and preview files an hour old
    that no scan names (left by a kill between a preview's write and its
    scan's commit, or between a purge's commit and its unlinks); returns how
    many scans went."""
    now = time.time() if now is None else now
    cutoff = now - days * 86400
    with mdb.transaction() as db:
        db.execute("DELETE FROM events WHERE created < ? AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE "
                   "d.event_id = events.id AND d.delivered_at IS NULL AND d.gave_up_at IS NULL)", (cutoff,))
    n = _delete_scans(mdb, "s.id IN (SELECT id FROM scans WHERE at < ?)", (cutoff,))
    sweep_previews(mdb, now - STRAY_AGE_S)
    return n


#: Seconds a preview file no scan names is left alone (a scan being recorded
#: writes its previews a moment before its rows commit).
STRAY_AGE_S = 3600.0


def sweep_previews(mdb: ModerationDB, older_than: float) -> int:
    """Removes preview files last changed before ``older_than`` (Unix time)
    that no recorded image names, and temporary files also at least
    :data:`STRAY_AGE_S` old; how many went."""
    folder = mdb.folder / PREVIEWS
    if not folder.is_dir():
        return 0
    named = {r[0] for r in mdb.read("SELECT DISTINCT preview FROM scan_images WHERE preview IS NOT NULL")}
    stale, writing = [], time.time() - STRAY_AGE_S  # a temporary file younger than that is being written
    for path in folder.iterdir():
        try:
            age_limit = min(older_than, writing) if path.suffix == ".tmp" else older_than
            if path.name not in named and path.stat().st_mtime < age_limit:
                stale.append(path.name)
        except FileNotFoundError:
            pass
    # checked again and unlinked under the write lock: a scan may have named one since
    return sum(_drop_unreferenced_previews(mdb, stale[i:i + 512]) for i in range(0, len(stale), 512))


def purge_uploader(mdb: ModerationDB, uploader: str) -> int:
    """Removes every scan of ``uploader`` (with their images, cases, decisions
    and previews); returns how many scans went."""
    return _delete_scans(mdb, "s.id IN (SELECT id FROM scans WHERE uploader = ?)", (uploader,))
