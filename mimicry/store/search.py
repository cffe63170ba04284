"""Nearest works of queries: exact (chunked matrix products) for a flat index.

:func:`exact_search` is what :meth:`Snapshot.search` runs when the snapshot has
no approximate index (:mod:`mimicry.store.ann`), and on the rows an
approximate index does not cover yet. Results are best first; a query with
fewer than ``k`` rows gets ``-1`` rows and ``-inf`` similarities after them.
"""

from __future__ import annotations

import numpy as np

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
