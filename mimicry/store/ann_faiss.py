"""Approximate indexes in FAISS: building, tuning, searching, loading.

``ivf`` and ``hnsw`` (:mod:`mimicry.store.ann`) work on compact codes: vectors
wider than :data:`PCA_DIM` are first projected to it by PCA (trained on the
portfolio; for unit vectors the Euclidean order in that space approximates the
cosine order; when the tuned recall falls short of the target that way, the
index is rebuilt at full width), then stored in 8-bit scalar quantisation,
about a twenty-fifth of the raw vectors at the default backbone's 1,568
dimensions. They return :data:`RERANK` times the wanted neighbours (of the
first ten; plus the rest) as candidates, re-ranked exactly against the
full-precision vectors (the memory-mapped segments, no second copy), so
similarities a scan reports are always exact. Index labels are positions in
the index's id list.

Works added since the index was built are searched exactly beside it; works
removed since are masked with an ``IDSelector`` (HNSW has no ``remove_ids``:
masking is how it deletes) until a rebuild.

Search settings (``nprobe``, ``efSearch``) are the smallest that reach
:data:`TARGET_RECALL` recall@10 against exact search for a sample of the
portfolio's works held out of the build (added after), measured at build
time, and are passed per query as FAISS ``SearchParameters``: a shared index
is never mutated, so any number of threads may search it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mimicry.errors import InputError
from mimicry.store import ann as ann_io
from mimicry.store.ann import HNSW, IVF, AnnInfo

log = logging.getLogger(__name__)

#: recall@10 against exact search that the search settings are tuned to reach.
TARGET_RECALL = 0.95
TUNING_QUERIES = 200
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: Most vectors an IVF is trained on (64 per list up to this): bounds k-means
#: at a million works (the 1M build took 59 s with it; more was not measured).
TRAIN_MAX = 100_000
#: Vectors wider than this are projected to it by PCA before coding.
PCA_DIM = 256
#: Candidates fetched beyond the wanted ``k``, then re-ranked exactly: ``RERANK``
#: times the first ten (where order matters most), plus ``k`` itself.
RERANK = 4


def nlist_for(n: int) -> int:
    """``4 sqrt(n)`` lists, at most one per 39 vectors (FAISS's training minimum), 16 to 65,536."""
    return int(min(65536, max(16, min(4 * round(math.sqrt(n)), n // 39))))


def build(vectors: np.ndarray, kind: str, seed: int = 0,
          rows: np.ndarray | None = None, pca: bool = True) -> tuple[faiss.Index, dict, int]:
    """A trained, filled index of ``kind`` (``ivf`` or ``hnsw``) of ``vectors``
    (only ``rows`` of them, in that order, if given), labelled 0..n-1:
    (index, params, training size). Never copies all the vectors at once.
    ``pca``: project vectors wider than :data:`PCA_DIM` first."""
    x = vectors
    rows = np.arange(len(x)) if rows is None else np.asarray(rows, np.int64)
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    dim = min(d, PCA_DIM) if pca else d
    if kind == IVF:
        nlist = nlist_for(len(rows))
        inner = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(dim), dim, nlist,
                                              faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
        inner.cp.seed = seed
        n_train = min(len(rows), 64 * nlist, TRAIN_MAX)
        params = {"nlist": nlist}
    elif kind == HNSW:
        inner = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, HNSW_M, faiss.METRIC_L2)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        n_train = min(len(rows), 100_000)
        params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
    else:
        raise InputError(f"no approximate index of type {kind!r}")
    index: faiss.Index = inner
    if dim < d:
        index = faiss.IndexPreTransform(faiss.PCAMatrix(d, dim), inner)
    train = rows if n_train >= len(rows) else np.sort(rng.choice(rows, n_train, replace=False))
    index.train(np.ascontiguousarray(x[train], dtype=np.float32))
    for start in range(0, len(rows), 65536):  # adds in slices: no full copy at once
        index.add(np.ascontiguousarray(x[rows[start:start + 65536]], dtype=np.float32))
    params.update({"pca": dim if dim < d else None, "codes": "SQ8", "rerank": RERANK})
    return index, params, n_train


def _inner(index: faiss.Index) -> faiss.Index:
    if isinstance(index, faiss.IndexPreTransform):
        return faiss.downcast_index(index.index)
    return index


def search_params(index: faiss.Index, setting: int, selector: Any = None) -> Any:
    """Per-call search parameters (never set on the shared index); the
    selector goes to the index that holds the labels."""
    if isinstance(_inner(index), faiss.IndexHNSW):
        p: Any = faiss.SearchParametersHNSW()
        p.efSearch = int(setting)
    else:
        p = faiss.SearchParametersIVF()
        p.nprobe = int(setting)
    if selector is not None:
        p.sel = selector
    if isinstance(index, faiss.IndexPreTransform):
        outer = faiss.SearchParametersPreTransform()
        outer.index_params = p
        outer.keep = p  # the inner object must outlive the call
        return outer
    return p


def settings_for(index: faiss.Index) -> list[int]:
    """Candidate settings, cheapest first."""
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        return [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    nlist = faiss.extract_index_ivf(inner).nlist
    return [p for p in (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024) if p < nlist] + [nlist]


def candidates(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int, setting: int,
               selector: Any = None, pos_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(exact similarities, rows of ``vectors``) of the best ``k`` among
    ``k + (RERANK - 1) x min(k, 10)`` candidates, re-ranked exactly;
    ``pos_rows`` maps index labels to rows (-1: not live; default: label = row)."""
    kc = min(index.ntotal, k + (RERANK - 1) * min(k, 10))
    _, labels = index.search(queries, kc, params=search_params(index, setting, selector))
    rows = labels if pos_rows is None else np.where(labels >= 0, pos_rows[np.maximum(labels, 0)], -1)
    ok = rows >= 0
    safe = np.where(ok, rows, 0)
    sims = np.einsum("qd,qkd->qk", queries, np.asarray(vectors[safe.reshape(-1)], np.float32)
                     .reshape(len(queries), kc, -1))
    sims = np.where(ok, sims, -np.inf).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(np.where(ok, rows, -1), order, 1)


def tune(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray,
         pos_rows: np.ndarray | None = None) -> tuple[int, float]:
    """The cheapest setting at which the index (over the rows ``pos_rows`` of
    ``vectors``, label ``i`` being row ``pos_rows[i]``) returns :data:`TARGET_RECALL`
    of the exact 10 nearest of ``queries`` (held out of the index, as new
    uploads are), after re-ranking; and the recall it reached."""
    from mimicry.store.snapshot import exact_search

    q = np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = exact_search(vectors, q, 10, rows=pos_rows)
    best = (settings_for(index)[-1], 0.0)
    for setting in settings_for(index):
        _, got = candidates(index, vectors, q, 10, setting, pos_rows=pos_rows)
        hits = sum(len(set(g) & set(t)) for g, t in zip(got.tolist(), truth.tolist()))
        best = (setting, hits / truth.size)
        if best[1] >= TARGET_RECALL:
            break
    return best


def create(folder: Path, vectors: np.ndarray, ids: np.ndarray, kind: str, generation: int) -> AnnInfo:
    """Builds, tunes and writes the ``kind`` index of ``vectors`` (rows of works ``ids``)."""
    start = time.perf_counter()
    ids = np.asarray(ids, np.int64)
    held = np.zeros(len(ids), dtype=bool)  # tuning queries: held out of the build, added after
    held[np.random.default_rng(0).choice(len(ids), min(TUNING_QUERIES, len(ids) // 10), replace=False)] = True
    rest = np.flatnonzero(~held)
    queries = np.asarray(vectors[held], np.float32)
    index, params, n_train = build(vectors, kind, rows=rest)
    setting, recall = tune(index, vectors, queries, pos_rows=rest)
    if recall < TARGET_RECALL and params.get("pca"):
        # The projection lost the neighbour order (a flat spectrum): code the full width.
        log.warning("%s over PCA-%d reached recall@10 %.3f only; building it without PCA",
                    kind, params["pca"], recall)
        index, params, n_train = build(vectors, kind, rows=rest, pca=False)
        setting, recall = tune(index, vectors, queries, pos_rows=rest)
    if recall < TARGET_RECALL:
        log.warning("%s index reaches recall@10 %.3f only at its widest setting", kind, recall)
    index.add(np.ascontiguousarray(vectors[held], dtype=np.float32))
    info = AnnInfo(kind, f"{kind}-{generation}-{time.time_ns()}.faiss", len(ids), params,
                   {"efSearch" if kind == HNSW else "nprobe": int(setting)}, n_train, round(recall, 4),
                   0, round(time.perf_counter() - start, 3), generation)
    ann_io.write(folder, index, np.concatenate([ids[rest], ids[held]]), info)
    return info


@dataclass(frozen=True)
class AnnView:
    """A loaded approximate index as one snapshot uses it: the index, each
    label's snapshot row (-1: removed
    since), the selector masking those, and the rows it does not hold."""

    index: Any
    info: AnnInfo
    pos_rows: np.ndarray
    selector: Any
    delta_rows: np.ndarray  # snapshot rows the index does not hold (added since)
    keep_alive: tuple = ()  # FAISS objects the selector points into

    @property
    def dead(self) -> int:
        return int((self.pos_rows < 0).sum())

    @property
    def setting(self) -> int:
        return int(next(iter(self.info.search.values())))

    def search(self, vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(exact similarities, snapshot rows) of the ``k`` nearest live works, best first."""
        from mimicry.store.snapshot import exact_search, merge_top

        q = np.ascontiguousarray(queries, dtype=np.float32)
        kk = min(k, self.index.ntotal)
        sims, rows = candidates(self.index, vectors, q, kk, self.setting, self.selector, self.pos_rows)
        if kk < k:
            sims = np.pad(sims, ((0, 0), (0, k - kk)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, k - kk)), constant_values=-1)
        if len(self.delta_rows):
            ds, dr = exact_search(vectors, q, k, rows=self.delta_rows)
            sims, rows = merge_top(sims, rows, ds, dr, k)
        return sims, rows


def load(folder: Path, info: AnnInfo, work_ids: np.ndarray, cache: dict | None = None) -> AnnView | None:
    """The approximate index ``info`` names lined up with a snapshot's
    ``work_ids``; None when it is unreadable (search exactly);
    ``FileNotFoundError`` when its files are gone (replaced since: the caller
    reads the committed state again). ``cache`` (one per store) keeps the last
    index read, so a new snapshot after a write that did not rebuild it does
    not read the file again."""
    entry = cache.get("entry") if cache is not None else None  # one tuple: threads share the cache
    if entry is not None and entry[0] == info.file:
        index, ann_ids = entry[1], entry[2]
    else:
        path, ids_path = ann_io.files(folder, info.file)
        if not path.exists() or not ids_path.exists():
            raise FileNotFoundError(path)
        try:
            # Read into memory: the codes are about a twenty-fifth of the raw vectors
            # (which stay mapped), and FAISS's mapped inverted lists measured 25x
            # slower per query here (3.8 against 0.16 ms at 10k works).
            index = faiss.read_index(str(path))
            ann_ids = np.load(ids_path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except (OSError, RuntimeError, ValueError):
            if not path.exists() or not ids_path.exists():
                raise FileNotFoundError(path) from None
            return None
        if len(ann_ids) != index.ntotal:
            return None
        if cache is not None:
            cache["entry"] = (info.file, index, ann_ids)
    return _view(index, info, ann_ids, work_ids)


def _view(index: Any, info: AnnInfo, ann_ids: np.ndarray, work_ids: np.ndarray) -> AnnView:
    """``index`` (labels: positions in ``ann_ids``) lined up with ``work_ids``."""
    order = np.argsort(work_ids, kind="stable")
    live_sorted = work_ids[order]
    if len(live_sorted):
        pos = np.clip(np.searchsorted(live_sorted, ann_ids), 0, len(live_sorted) - 1)
        pos_rows = np.where(live_sorted[pos] == ann_ids, order[pos], -1).astype(np.int64)
    else:
        pos_rows = np.full(len(ann_ids), -1, np.int64)
    covered = np.zeros(len(work_ids), dtype=bool)
    covered[pos_rows[pos_rows >= 0]] = True
    dead = np.ascontiguousarray(np.flatnonzero(pos_rows < 0), dtype=np.int64)
    batch = faiss.IDSelectorBatch(dead) if len(dead) else None
    selector = faiss.IDSelectorNot(batch) if batch is not None else None
    return AnnView(index, info, pos_rows, selector, np.flatnonzero(~covered), (batch, dead))
