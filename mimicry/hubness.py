"""Hubness correction against a reference population (CSLS-style).

Some images sit close to everything (a query in a common style), and some
artists' works sit close to everything (a hub artist). Raw cosine rewards both.
With a reference population (the calibration background: art by nobody
registered), a query's *neighbourhood similarity* ``r(q)`` is its mean cosine to
its ``k`` nearest reference images, and an artist's ``r(a)`` is the mean of
``r`` over the artist's works. The corrected score of artist ``a`` for query ``q``::

    corrected = raw - weight * (r(q) + r(a)) / 2

(``k = 10`` and ``weight = 0.5`` measured best on the development sets; README,
"Accuracy"). Calibration and scanning apply this same function with the same
``k``, weight and ``r(a)``. The one difference is deliberate: a reference image
scored during calibration leaves its own group (its maker's folder, or itself)
out of its neighbours, as an image by a maker the reference does not hold
would have to; a group so large that fewer than ``k`` neighbours remain
averages the ones left.
"""

from __future__ import annotations

import numpy as np

#: Reference neighbours per query, and the share of the correction applied.
DEFAULT_K = 10
DEFAULT_WEIGHT = 0.5


def neighbourhood(queries: np.ndarray, reference: np.ndarray | None, k: int,
                  query_groups: np.ndarray | None = None,
                  reference_groups: np.ndarray | None = None, chunk: int = 1024) -> np.ndarray:
    """``r(q)`` for each query row: the mean similarity to its ``k`` nearest
    reference rows (0 without a reference). With groups, a query never counts
    reference rows of its own group."""
    q = np.asarray(queries, dtype=np.float32)
    if reference is None or len(reference) == 0 or k < 1:
        return np.zeros(len(q), dtype=np.float32)
    kk = min(k, len(reference))
    out = np.empty(len(q), dtype=np.float32)
    for start in range(0, len(q), chunk):
        sims = q[start:start + chunk] @ reference.T
        if query_groups is not None and reference_groups is not None:
            same = query_groups[start:start + chunk, None] == reference_groups[None, :]
            sims = np.where(same, -np.inf, sims)
        top = np.partition(sims, sims.shape[1] - kk, axis=1)[:, -kk:]
        finite = np.isfinite(top)
        counts = finite.sum(axis=1)
        sums = np.where(finite, top, 0.0).sum(axis=1)
        out[start:start + chunk] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return out


def correct(raw: np.ndarray, query_r: np.ndarray, artist_r: np.ndarray, weight: float) -> np.ndarray:
    """Corrected ``(n, n_artists)`` scores from raw scores and both neighbourhoods."""
    return raw - weight * (query_r[:, None] + artist_r[None, :]) / 2
