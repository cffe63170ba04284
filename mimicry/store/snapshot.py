"""An immutable view of one committed state of an index, for reads.

Scans, calibration and evaluation read a :class:`Snapshot`: vectors, works,
artists, the stored calibration arrays and the background as of one committed
revision. Nothing in it changes afterwards and nothing reads the disk again, so
any number of threads may score against one snapshot while a writer commits
the next. Storage knows arrays only: the domain parses the stored calibration
(:func:`mimicry.flagging.calibration_of`) and keeps what it derives in
:attr:`Snapshot.memo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mimicry.errors import InputError
from mimicry.store.catalogue import Work
from mimicry.store.pin import Pin


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Snapshot:
    """One committed state. Rows of :attr:`vectors` are the works in
    :attr:`work_ids` order; :attr:`row_artist` gives each row's artist as an
    index into :attr:`artists` (sorted names of the artists that have works)."""

    generation: int
    revision: int
    work_ids: np.ndarray
    vectors: np.ndarray
    works: Mapping[int, Work]
    artists: tuple[str, ...]
    row_artist: np.ndarray
    stored_calibration: Mapping[str, np.ndarray] | None = None  # the calibration's arrays, as stored
    background: np.ndarray | None = None
    background_groups: np.ndarray | None = None
    pin: Pin | None = None
    folder: Path | None = None
    columns: tuple[np.ndarray, ...] = field(default=(), repr=False)
    artist_counts: Mapping[str, int] = field(default_factory=dict)  # every artist row, with no works too
    ann: Any = field(default=None, repr=False)  # an approximate index (:class:`mimicry.store.ann_faiss.AnnView`)
    #: What the domain derives from this state (its parsed calibration), made
    #: once per snapshot; storage never reads or writes it.
    memo: dict = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def build(
        vectors: np.ndarray,
        work_ids: Sequence[int],
        works: Mapping[int, Work],
        *,
        generation: int = 0,
        revision: int = 0,
        stored_calibration: Mapping[str, np.ndarray] | None = None,
        background: np.ndarray | None = None,
        background_groups: np.ndarray | None = None,
        pin: Pin | None = None,
        folder: Path | None = None,
        artist_counts: Mapping[str, int] | None = None,
    ) -> Snapshot:
        """A snapshot of ``vectors`` (rows in ``work_ids`` order) whose works are ``works``."""
        ids = np.asarray(work_ids, dtype=np.int64)
        names = [works[int(i)].artist for i in ids]
        artists = tuple(sorted(set(names)))
        pos = {a: j for j, a in enumerate(artists)}
        row_artist = np.array([pos[a] for a in names], dtype=np.int64)
        return Snapshot._assemble(vectors, ids, dict(works), artists, row_artist, generation, revision,
                                  stored_calibration, background, background_groups, pin, folder,
                                  artist_counts)

    def advance(self, keep: np.ndarray, new_works: Sequence[Work], vectors: np.ndarray, *,
                generation: int, revision: int, artist_counts: Mapping[str, int]) -> Snapshot:
        """The snapshot after a commit that kept the rows ``keep`` (a mask) and
        appended ``new_works`` (in row order), whose vectors are now ``vectors``
        (kept rows, then new): the same as :meth:`build` on the result, with
        stored calibration, background, pin and folder carried over, without a
        Python pass over every row (a writer's commit at a million works)."""
        new_ids = np.fromiter((w.id for w in new_works), np.int64, len(new_works))
        ids = np.concatenate([self.work_ids[keep], new_ids])
        removed = set(self.work_ids[~keep].tolist())
        works = {i: w for i, w in self.works.items() if i not in removed}
        works.update((w.id, w) for w in new_works)
        kept_rows = self.row_artist[keep]
        present = np.flatnonzero(np.bincount(kept_rows, minlength=len(self.artists)))
        artists = tuple(sorted({self.artists[j] for j in present} | {w.artist for w in new_works}))
        pos = {a: j for j, a in enumerate(artists)}
        remap = np.full(len(self.artists), -1, np.int64)
        remap[present] = [pos[self.artists[j]] for j in present]
        row_artist = np.concatenate([remap[kept_rows], np.array([pos[w.artist] for w in new_works], np.int64)])
        return Snapshot._assemble(vectors, ids, works, artists, row_artist, generation, revision,
                                  self.stored_calibration, self.background, self.background_groups, self.pin,
                                  self.folder, artist_counts)

    @staticmethod
    def _assemble(vectors: np.ndarray, ids: np.ndarray, works: dict[int, Work], artists: tuple[str, ...],
                  row_artist: np.ndarray, generation: int, revision: int,
                  stored_calibration: Mapping[str, np.ndarray] | None,
                  background: np.ndarray | None, background_groups: np.ndarray | None, pin: Pin | None,
                  folder: Path | None, artist_counts: Mapping[str, int] | None) -> Snapshot:
        # Each artist's rows, ascending: one stable sort, not a pass per artist
        # (which is works x artists: minutes at a million works).
        order = np.argsort(row_artist, kind="stable")
        bounds = np.cumsum(np.bincount(row_artist, minlength=len(artists)))[:-1]
        columns = tuple(_frozen(c) for c in np.split(order, bounds)) if len(artists) else ()
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or len(vecs) != len(ids):
            raise InputError(f"{len(ids)} work ids for vectors of shape {vecs.shape}")
        return Snapshot(generation, revision, _frozen(ids), _frozen(vecs), works, artists,
                        _frozen(row_artist.astype(np.int64, copy=False)), stored_calibration,
                        None if background is None else _frozen(np.asarray(background, np.float32)),
                        None if background_groups is None else _frozen(np.asarray(background_groups)),
                        pin, folder, columns,
                        dict(artist_counts) if artist_counts is not None
                        else {a: len(c) for a, c in zip(artists, columns)})

    @staticmethod
    def from_labelled(vectors: np.ndarray, artists: Sequence[str], paths: Sequence[str] | None = None,
                      background: np.ndarray | None = None,
                      background_groups: np.ndarray | None = None) -> Snapshot:
        """An in-memory snapshot of labelled vectors (no index folder), as the
        evaluation harness scores them: work ids are row numbers."""
        paths = paths or [""] * len(artists)
        works = {i: Work(i, a, str(p), "", 0, 0, 0.0) for i, (a, p) in enumerate(zip(artists, paths))}
        return Snapshot.build(vectors, list(range(len(artists))), works, background=background,
                              background_groups=background_groups)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    @property
    def row_artist_names(self) -> list[str]:
        return [self.artists[j] for j in self.row_artist]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows) of the ``k`` works nearest each query, best first
        (rows index :attr:`work_ids`; ``-1`` past the last work). Exact, or
        through the approximate index when the snapshot has one (similarities
        re-ranked exactly either way); safe from any number of threads."""
        k = min(k, len(self.work_ids))
        if self.ann is not None:
            return self.ann.search(self.vectors, queries, k)
        return exact_search(self.vectors, queries, k)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows``."""
        return self.vectors[np.asarray(rows, dtype=np.int64)]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The ``[start, stop)`` runs of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def grow(growth: tuple[np.ndarray, int] | None, vectors: np.ndarray, keep: np.ndarray,
         new: np.ndarray) -> tuple[np.ndarray, int]:
    """The growth buffer after a commit: (buffer, rows used), whose used rows
    are ``vectors[keep]`` followed by ``new``, for a writer's next snapshot
    (:meth:`Snapshot.advance`).

    When nothing is removed and ``vectors`` is the used part of ``growth``'s
    buffer, the new rows go into its spare tail and the next snapshot's rows
    are a longer view of it: earlier snapshots keep their shorter views, whose
    rows never change, so a commit of k works costs k rows, not a copy of the
    registry. Otherwise a new buffer, with an eighth spare, takes the rows."""
    n = int(keep.sum()) + len(new)
    buf, used = growth if growth is not None else (None, -1)
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
    return buf, n


# -- exact search: what a snapshot without an approximate index runs --------------
# (and an approximate index on the rows it does not cover yet). Results are
# best first; a query with fewer than ``k`` rows gets ``-1`` rows and ``-inf``
# similarities after them.

#: Query x row similarities held at once (floats): 64 MB.
CHUNK_FLOATS = 1 << 24


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int,
                 rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, row numbers), each ``(n_queries, k)``, best first, of the
    ``k`` rows of ``vectors`` (only ``rows`` of them, if given) nearest to each query."""
    q = np.asarray(queries, dtype=np.float32)
    pool = np.arange(len(vectors)) if rows is None else np.asarray(rows, dtype=np.int64)
    sims_out = np.full((len(q), k), -np.inf, dtype=np.float32)
    rows_out = np.full((len(q), k), -1, dtype=np.int64)
    if not len(pool) or not len(q) or k < 1:
        return sims_out, rows_out
    step = max(1, CHUNK_FLOATS // max(1, len(q)))
    for start in range(0, len(pool), step):
        part = pool[start:start + step]
        block = vectors[start:start + step] if rows is None else vectors[part]  # a view when it can be
        sims = q @ np.asarray(block, dtype=np.float32).T
        sims_out, rows_out = merge_top(sims_out, rows_out, sims, np.broadcast_to(part, sims.shape), k)
    return sims_out, rows_out


def merge_top(s1: np.ndarray, r1: np.ndarray, s2: np.ndarray, r2: np.ndarray,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of two candidate lists per query, best first (ties: lower row first)."""
    s = np.concatenate([s1, s2], axis=1)
    r = np.concatenate([r1, r2], axis=1)
    if s.shape[1] > k:
        keep = np.argpartition(-s, k - 1, axis=1)[:, :k]
        s, r = np.take_along_axis(s, keep, 1), np.take_along_axis(r, keep, 1)
    order = np.lexsort((r, -s), axis=1) if s.shape[1] else np.zeros(s.shape, np.int64)
    return np.take_along_axis(s, order, 1), np.take_along_axis(r, order, 1)
