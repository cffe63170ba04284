"""Vectors stored as immutable segments: a write adds a file, never rewrites one.

Each segment is two ``.npy`` files under ``segments/`` (``<n>.ids.npy``: int64
work ids; ``<n>.vectors.npy``: float32 rows), written complete (temporary
name, fsync, ``os.replace``) *before* the catalogue commits the list of live
segments in the same SQLite transaction as the rows. Removing a work deletes
its catalogue row only: its vector stays in its segment, masked, until a merge.
Past :data:`MAX_SEGMENTS` segments a commit merges the two neighbouring
segments with the fewest rows between them (so sizes grow geometrically, as in
a binary counter, and a large base segment is never rewritten for small new
ones); past :data:`MAX_DEAD_SHARE` dead rows it merges everything into one
segment of the live rows. A write costs the new vectors, plus now and then a
merge of small segments, instead of the whole index. A merge keeps the rows
in segment order, so a snapshot's row order never changes under it.

Crash safety: the committed list only ever names complete files; files it does
not name are leftovers of an interrupted write (or of a merge) and a later
writer removes them, except those of the list the last commit replaced, which
stay one more commit so that a reader that read that list while the commit
landed still finds them (a reader that finds a file gone reads the list again,
and counts it as missing only when no commit has landed meanwhile). Readers
map the files read-only (``mmap_mode='r'``): a file a writer has just removed
stays readable to a reader that opened it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mimicry.errors import CorruptIndexError

FOLDER = "segments"
#: Merge two neighbours past this many segments; everything past this share of dead rows.
MAX_SEGMENTS = 8
MAX_DEAD_SHARE = 0.25

_FILE_RE = re.compile(r"^(\d+)\.(ids|vectors)\.npy(\.tmp)?$")


@dataclass(frozen=True)
class SegmentRef:
    """One committed segment: its number and how many rows it stores."""

    n: int
    rows: int


def encode(refs: Sequence[SegmentRef]) -> str:
    return json.dumps([[r.n, r.rows] for r in refs])


def decode(text: str | None) -> list[SegmentRef]:
    """The committed list (none before the first commit)."""
    if not text:
        return []
    return [SegmentRef(int(n), int(rows)) for n, rows in json.loads(text)]


def _paths(folder: Path, n: int) -> tuple[Path, Path]:
    d = folder / FOLDER
    return d / f"{n:08d}.ids.npy", d / f"{n:08d}.vectors.npy"


def write(folder: Path, n: int, ids: np.ndarray, vectors: np.ndarray) -> SegmentRef:
    """Writes segment ``n`` complete and synced (ids and vectors) and returns its reference."""
    from mimicry.store.durable import sync_replace  # the write side only: reads never load it

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for vectors of shape {vectors.shape}")
    (folder / FOLDER).mkdir(exist_ok=True)
    for path, array in zip(_paths(folder, n), (ids, vectors)):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        sync_replace(tmp, path)
    return SegmentRef(n, len(ids))


def load(folder: Path, ref: SegmentRef, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of one segment, the vectors memory-mapped read-only.
    ``FileNotFoundError`` when a writer has merged it away meanwhile (read the
    committed list again); :class:`CorruptIndexError` when it is not what the
    list says."""
    ids_path, vec_path = _paths(folder, ref.n)
    try:
        ids = np.load(ids_path, allow_pickle=False)
        vectors = np.load(vec_path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"{vec_path}: unreadable segment ({exc})") from None
    if vectors.ndim != 2 or vectors.shape != (ref.rows, dim) or ids.shape != (ref.rows,):
        raise CorruptIndexError(f"{vec_path}: segment of shape {vectors.shape} with {ids.shape} ids, "
                                f"where the catalogue says {ref.rows} rows of dimension {dim}")
    return ids, vectors


def live(folder: Path, refs: Sequence[SegmentRef], dim: int,
         live_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of the rows whose id is in ``live_ids``, in segment order.
    With one segment and no dead rows the vectors are its read-only map (no
    copy); otherwise the live rows are gathered into memory."""
    parts_ids, parts_vecs = [], []
    for ref in refs:
        ids, vecs = load(folder, ref, dim)
        keep = np.isin(ids, live_ids)
        if keep.all():
            parts_ids.append(ids)
            parts_vecs.append(vecs)
        else:
            parts_ids.append(ids[keep])
            parts_vecs.append(np.asarray(vecs[keep]))
    if len(parts_vecs) == 1:
        return parts_ids[0], parts_vecs[0]
    if not parts_vecs:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate(parts_ids), np.concatenate(parts_vecs)


def merge_plan(refs: Sequence[SegmentRef], live_rows: int) -> tuple[int, int] | None:
    """Which segments a commit leaving ``refs`` (oldest first) with ``live_rows``
    live rows should merge, as a window ``(start, stop)`` of ``refs``: all of
    them past the dead share; past the segment count, the neighbouring pair
    with the fewest rows (the newest on a tie); None: no merge."""
    stored = sum(r.rows for r in refs)
    if stored > 0 and (stored - live_rows) > MAX_DEAD_SHARE * stored:
        return 0, len(refs)
    if len(refs) <= MAX_SEGMENTS:
        return None
    i = min(range(len(refs) - 1), key=lambda j: (refs[j].rows + refs[j + 1].rows, -j))
    return i, i + 2


def remove_stale(folder: Path, keep: Sequence[SegmentRef]) -> None:
    """Deletes segment files (and temporaries) not in ``keep``."""
    d = folder / FOLDER
    if not d.is_dir():
        return
    wanted = {r.n for r in keep}
    for entry in d.iterdir():
        m = _FILE_RE.match(entry.name)
        if m and (int(m.group(1)) not in wanted or m.group(3)):
            try:
                entry.unlink()
            except FileNotFoundError:
                pass
