"""A calibration background from the hub's own traffic: recorded single
uploads, grouped by uploader (the uploaders are the makers of the maker
test's null), so the image-level promise is about the hub's own images.

What is sampled (:func:`sample`):

- images of recorded single-upload scans (``kind`` image) made under the
  index's current pin (a rebuild re-embeds the works, not the history);
  model samples are not uploads by a maker and are left out;
- each distinct image once (by sha256), grouped by uploader; a scan without
  an uploader is a group of its own;
- at most ``per_uploader`` images of one uploader (a seeded sample), so no
  heavy uploader dominates the null, and at most ``limit`` images in all
  (whole uploaders, in a seeded order), so a refresh costs the same however
  long the history;
- **left out:** every upload of an uploader with a *confirmed* case (an upload
  or a model a moderator confirmed as an imitation): they are not ordinary
  makers. Nothing else is left out: neither flagged images nor open cases,
  nor dismissed ones. Leaving out what the current threshold flags would cut
  the null's upper tail, the next threshold would fall, and each refresh would
  flag more ordinary uploads than the target (docs, "Verdicts", where both
  choices are measured).

Uploader names never reach the index: groups are stored as numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mimicry.errors import InputError
from mimicry.moderation.db import ModerationDB

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.flagging import Calibration
    from mimicry.index import StyleIndex
    from mimicry.store.writer import Writer

log = logging.getLogger(__name__)

#: Images of one uploader in the background at most.
PER_UPLOADER = 50
#: Images in the background at most.
LIMIT = 5000
SEED = 0

#: The scans of confirmed cases: their upload's or model's scans (by the hub's
#: id), or the one scan a case without a hub id was opened by (``scan:<id>``).
#: Three indexed lookups per case (scans by upload_id, by model_id, by id).
_CONFIRMED_CASE_SCANS = """
WITH confirmed AS (SELECT kind, key FROM cases WHERE state = 'confirmed'),
case_scans AS (
  SELECT s.id, s.uploader, s.kind FROM confirmed c JOIN scans s ON s.upload_id = c.key
    WHERE c.kind = 'upload' AND s.kind = 'image'
  UNION SELECT s.id, s.uploader, s.kind FROM confirmed c JOIN scans s ON s.model_id = c.key
    WHERE c.kind = 'model' AND s.kind = 'model'
  UNION SELECT s.id, s.uploader, s.kind FROM confirmed c JOIN scans s
    ON s.id = CAST(substr(c.key, 6) AS INTEGER) AND c.key = 'scan:' || s.id
    WHERE c.key LIKE 'scan:%' AND s.kind = CASE c.kind WHEN 'upload' THEN 'image' ELSE 'model' END
)
"""
_CONFIRMED_UPLOADERS = _CONFIRMED_CASE_SCANS + "SELECT DISTINCT uploader FROM case_scans WHERE uploader IS NOT NULL"
_CONFIRMED_SCANS = _CONFIRMED_CASE_SCANS + "SELECT id FROM case_scans WHERE kind = 'image'"


@dataclass(frozen=True)
class HistoryBackground:
    """Sampled history: ``vectors`` with their ``groups`` (one number per
    uploader), how many uploaders, and how many recorded images were left out
    as an uploader's with a confirmed case."""

    vectors: np.ndarray
    groups: np.ndarray
    uploaders: int
    left_out: int


def _rows(mdb: ModerationDB, since: float) -> list[tuple[int, str, int, str | None, int]]:
    """(rowid, sha256, vector bytes, uploader, scan id) of each recorded image: no vectors yet."""
    return mdb.read("SELECT i.rowid, i.sha256, length(i.vector), s.uploader, s.id FROM scan_images i "
                    "JOIN scans s ON s.id = i.scan_id WHERE s.kind = 'image' AND s.at >= ? ORDER BY i.rowid",
                    (since,))


def _vectors(mdb: ModerationDB, rowids: list[int], dim: int) -> np.ndarray:
    """The vectors of the recorded images ``rowids``, in that order (read only
    for the images sampled, so memory follows the sample, not the history)."""
    got: dict[int, bytes] = {}
    for start in range(0, len(rowids), 500):  # under SQLite's bound-variable limit
        part = rowids[start:start + 500]
        got.update(mdb.read(f"SELECT rowid, vector FROM scan_images WHERE rowid IN ({','.join('?' * len(part))})",
                            part))
    if not rowids:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(got[r] for r in rowids), np.float32).reshape(len(rowids), dim)


def sample(mdb: ModerationDB, dim: int, since: float = 0.0, per_uploader: int = PER_UPLOADER,
           limit: int = LIMIT, seed: int = SEED) -> HistoryBackground:
    """The background the history gives (module docstring): images of scans
    recorded at ``since`` or later whose vectors have dimension ``dim``."""
    confirmed = {u for (u,) in mdb.read(_CONFIRMED_UPLOADERS)}
    confirmed_scans = {s for (s,) in mdb.read(_CONFIRMED_SCANS)}
    by_group: dict[str, list[int]] = {}
    seen: set[str] = set()
    left_out = 0
    for rowid, sha, nbytes, uploader, scan_id in _rows(mdb, since):
        if uploader in confirmed or scan_id in confirmed_scans:
            left_out += 1
            continue
        if sha in seen or nbytes != 4 * dim:
            continue
        seen.add(sha)
        by_group.setdefault(f"u:{uploader}" if uploader is not None else f"s:{scan_id}", []).append(rowid)
    rng = np.random.default_rng(seed)
    vecs: list[int] = []
    groups: list[int] = []
    for g, name in enumerate(sorted(by_group, key=lambda _: rng.random())):
        rows = by_group[name]
        take = rows if len(rows) <= per_uploader else [rows[i] for i in sorted(
            rng.choice(len(rows), per_uploader, replace=False))]
        if len(vecs) + len(take) > limit:
            break
        vecs += take
        groups += [g] * len(take)
    return HistoryBackground(_vectors(mdb, vecs, dim), np.array(groups, np.int64), len(set(groups)), left_out)


def calibrate_from_history(ix: StyleIndex, mdb: ModerationDB, rate: float, minimum: int | None = None
                           ) -> tuple[Calibration, HistoryBackground]:
    """Calibrates ``ix`` at ``rate`` with the history's background
    (:func:`sample`) as its stored background and maker null. Refuses
    (:class:`InputError`, nothing changed) with fewer than ``minimum`` images
    (default: the fewest that can flag at ``rate`` at all)."""
    from mimicry.flagging import flaggable_size
    from mimicry.ingestion import calibrate_index_vectors

    from mimicry.moderation.lookback import pinned_at

    snap = ix.snapshot()
    bg = sample(mdb, snap.dim, pinned_at(snap))
    need = flaggable_size(rate) if minimum is None else minimum
    if len(bg.vectors) < need:
        raise InputError(f"the scan history holds {len(bg.vectors)} usable uploads by {bg.uploaders} uploaders "
                         f"(recorded since the index's model was pinned); calibrating at {rate:g} from it "
                         f"needs at least {need}")
    cal = calibrate_index_vectors(ix, bg.vectors, bg.groups, rate,
                                  f"from the scan history: {len(bg.vectors)} uploads by {bg.uploaders} uploaders")
    log.info("calibrated from the history: %d uploads by %d uploaders (%d left out: confirmed uploaders)",
             len(bg.vectors), bg.uploaders, bg.left_out)
    return cal, bg


def calibrate_index_from_history(ix: StyleIndex, fpr: float | None = None) -> tuple[Calibration, str]:
    """``mimicry calibrate --from-history``: :func:`calibrate_from_history` at
    ``fpr`` (default ``MIMICRY_FPR``); the calibration and a sentence on its
    background. An index without a scan history is :class:`InputError`."""
    from mimicry.moderation.db import FILENAME
    from mimicry.settings import check_rate

    if not (ix.folder / FILENAME).exists():
        raise InputError(f"{ix.folder}: no scan history here (`mimicry serve` records it)")
    rate = check_rate("fpr", ix.settings.fpr if fpr is None else fpr)
    cal, bg = calibrate_from_history(ix, ModerationDB(ix.folder), rate)
    return cal, (f"background from the scan history: {len(bg.vectors)} uploads by {bg.uploaders} uploaders "
                 f"({bg.left_out} left out: uploaders with a confirmed case)")


def uploader_vectors(mdb: ModerationDB, uploader: str) -> set[bytes]:
    """The float32 bytes of every image vector recorded of ``uploader``
    (read before a purge, to find them in the stored background)."""
    return {v for (v,) in mdb.read("SELECT i.vector FROM scan_images i JOIN scans s ON s.id = i.scan_id "
                                   "WHERE s.uploader = ?", (uploader,))}


def forget(w: Writer, vectors: set[bytes]) -> int:
    """Removes, in writer ``w``, the rows of the stored background whose
    vector is one of ``vectors`` (an uploader's, :func:`uploader_vectors`),
    with a calibrated index's calibration remade on what is left at its
    target rate, both in one transaction (a kill leaves the old pair or the
    new); how many rows went (0: nothing changed). A row whose vector is
    equal byte for byte is removed whoever recorded it first: a purge errs
    on the side of forgetting."""
    from mimicry.calibration import calibrate
    from mimicry.flagging import calibration_of, flaggable_size

    snap = w.snapshot()
    if not vectors or snap.background is None or not len(snap.background):
        return 0
    stored = np.asarray(snap.background, np.float32)
    keep = np.array([row.tobytes() not in vectors for row in stored])
    if keep.all():
        return 0
    groups = np.asarray(snap.background_groups if snap.background_groups is not None else np.arange(len(keep)),
                        np.int64)[keep]
    cal, arrays = calibration_of(snap, strict=False), None
    if cal is not None and len(snap.artists) >= 2:
        arrays = calibrate(snap.vectors, snap.row_artist_names, stored[keep], target_rate=cal.target_rate,
                           generation=snap.generation, background_groups=groups).to_arrays()
        if keep.sum() < flaggable_size(cal.target_rate):
            log.warning("the stored background keeps %d images after a purge: too few to flag anything at %g; "
                        "calibrate again (`mimicry calibrate`) with a larger background", keep.sum(),
                        cal.target_rate)
    w.set_background(stored[keep], groups, calibration=arrays, subset=True)
    return int((~keep).sum())
