"""Approximate nearest-neighbour indexes for hub-scale registries (FAISS).

Index types (``mimicry index --index-type``, recorded in the pin):

- ``flat``: exact search over the vectors (no extra file). Right for small
  registries, where a matrix product is already fast.
- ``ivf``: an inverted file, ``nlist = 4 sqrt(n)`` lists (16 to 65,536, at most n / 39),
  trained on up to 64 vectors per list drawn from the portfolio, codes in 8-bit
  scalar quantisation (``IVF,SQ8``: a quarter of the raw vectors' memory).
- ``hnsw``: a graph (HNSW, 32 links per node) over 8-bit codes.

Both return :data:`RERANK` times the wanted neighbours as candidates, which
are re-ranked exactly against the stored full-precision vectors (the
memory-mapped segments, no second copy): similarities a scan reports are
always exact, and the index costs a quarter of the raw vectors plus links.
- ``auto``: ``flat`` below :data:`AUTO_FLAT_MAX` works, ``ivf`` from there
  (README, "Scale": where exact search stops meeting 2 ms a query here).

The approximate index is derived data: built from the committed vectors after
a write, written complete (temporary name, fsync, rename) under ``ann/``, and
named by ``index_infos.json`` (type, parameters, training size, measured
recall, memory; written after it) as autofaiss does. A reader that finds no
usable index searches exactly, so a kill at any moment costs speed, never
results. Works added since the index was built are searched exactly beside
it; works removed since are masked with an ``IDSelector``. The writer rebuilds
(and an IVF retrains) when the unindexed works pass :data:`REBUILD_NEW_SHARE`
of the indexed ones, or the removed ones :data:`REBUILD_DEAD_SHARE` (HNSW has no
``remove_ids``: masking is how it deletes).

Search settings (``nprobe``, ``efSearch``) are the smallest that reach
:data:`TARGET_RECALL` recall@10 against exact search for a sample of the
portfolio's works held out of the build (added after), measured at build
time, and are passed per query as FAISS
``SearchParameters``: a shared index is never mutated, so any number of threads
may search it.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mimicry.errors import InputError

FLAT, IVF, HNSW, AUTO = "flat", "ivf", "hnsw", "auto"
KINDS = (FLAT, IVF, HNSW, AUTO)
FOLDER = "ann"
INFOS = "index_infos.json"
#: ``auto`` stays exact below this many works (README, "Scale").
AUTO_FLAT_MAX = 20_000
#: Rebuild when works added since pass this share of the indexed ones, or removed ones pass the other.
REBUILD_NEW_SHARE = 0.10
REBUILD_DEAD_SHARE = 0.20
#: recall@10 against exact search that the search settings are tuned to reach.
TARGET_RECALL = 0.95
TUNING_QUERIES = 200
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: An approximate index needs at least this many vectors (smaller registries stay flat).
MIN_ANN = 1000
#: Candidates fetched per wanted neighbour, then re-ranked exactly.
RERANK = 4


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"--index-type {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def resolve(kind: str, n: int) -> str:
    """The index type ``kind`` means for ``n`` works (``auto``, and anything below
    :data:`MIN_ANN`, resolve to a concrete type)."""
    if n < MIN_ANN:
        return FLAT
    if kind == AUTO:
        return FLAT if n < AUTO_FLAT_MAX else IVF
    return kind


@dataclass
class AnnInfo:
    """What ``index_infos.json`` says about the approximate index."""

    type: str
    file: str
    vectors: int
    params: dict[str, Any]
    search: dict[str, int]
    training_size: int
    recall_at_10: float
    memory_bytes: int
    build_s: float
    generation: int
    built_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nlist_for(n: int) -> int:
    """``4 sqrt(n)`` lists, at most one per 39 vectors (FAISS's training minimum), 16 to 65,536."""
    return int(min(65536, max(16, min(4 * round(math.sqrt(n)), n // 39))))


def build(vectors: np.ndarray, ids: np.ndarray, kind: str, seed: int = 0) -> tuple[faiss.Index, dict, int]:
    """A trained, filled index of ``kind`` (``ivf`` or ``hnsw``): (index, params, training size)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    if kind == IVF:
        nlist = nlist_for(len(x))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        n_train = min(len(x), 64 * nlist)
        index.cp.seed = seed
        index.train(x if n_train == len(x) else x[np.sort(rng.choice(len(x), n_train, replace=False))])
        index.add_with_ids(x, ids)
        return index, {"nlist": nlist, "codes": "SQ8", "rerank": RERANK}, n_train
    if kind == HNSW:
        inner = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        n_train = min(len(x), 100_000)
        inner.train(x if n_train == len(x) else x[np.sort(rng.choice(len(x), n_train, replace=False))])
        index = faiss.IndexIDMap2(inner)
        index.add_with_ids(x, ids)
        return index, {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "codes": "SQ8",
                       "rerank": RERANK}, n_train
    raise InputError(f"no approximate index of type {kind!r}")


def search_params(index: faiss.Index, setting: int, selector: Any = None) -> Any:
    """Per-call search parameters (never set on the shared index)."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexHNSW):
        p = faiss.SearchParametersHNSW()
        p.efSearch = int(setting)
    else:
        p = faiss.SearchParametersIVF()
        p.nprobe = int(setting)
    if selector is not None:
        p.sel = selector
    return p


def settings_for(index: faiss.Index) -> list[int]:
    """Candidate settings, cheapest first."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexHNSW):
        return [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    nlist = faiss.extract_index_ivf(index).nlist
    return [p for p in (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024) if p < nlist] + [nlist]


def candidates(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int, setting: int,
               selector: Any = None, id_rows: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(exact similarities, ids) of the best ``k`` among ``RERANK x k`` candidates,
    re-ranked against ``vectors`` (rows given by ``id_rows(ids)``; default: id = row)."""
    kc = min(index.ntotal, RERANK * k)
    _, ids = index.search(queries, kc, params=search_params(index, setting, selector))
    rows = ids if id_rows is None else id_rows(ids)
    ok = rows >= 0
    safe = np.where(ok, rows, 0)
    sims = np.einsum("qd,qkd->qk", queries, np.asarray(vectors[safe.reshape(-1)], np.float32)
                     .reshape(len(queries), kc, -1))
    sims = np.where(ok, sims, -np.inf).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(np.where(ok, rows, -1), order, 1)


def tune(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray,
         id_rows: Any = None) -> tuple[int, float]:
    """The cheapest setting at which the index (over ``vectors``, its ids mapped
    to their rows by ``id_rows``; default: equal) returns :data:`TARGET_RECALL`
    of the exact 10 nearest of ``queries`` (held out of the index, as new
    uploads are), after re-ranking; and the recall it reached."""
    from mimicry.store.search import exact_search

    q = np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = exact_search(vectors, q, 10)
    best = (settings_for(index)[-1], 0.0)
    for setting in settings_for(index):
        _, got = candidates(index, vectors, q, 10, setting, id_rows=id_rows)
        hits = sum(len(set(g) & set(t)) for g, t in zip(got.tolist(), truth.tolist()))
        best = (setting, hits / truth.size)
        if best[1] >= TARGET_RECALL:
            break
    return best


def id_rows_for(ids: np.ndarray) -> Any:
    """A function from ids to their positions in ``ids`` (-1 for ids not there)."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]

    def rows(x: np.ndarray) -> np.ndarray:
        if not len(sorted_ids):
            return np.full(x.shape, -1, np.int64)
        pos = np.clip(np.searchsorted(sorted_ids, x), 0, len(sorted_ids) - 1)
        return np.where((x >= 0) & (sorted_ids[pos] == x), order[pos], -1)

    return rows


def create(folder: Path, vectors: np.ndarray, ids: np.ndarray, kind: str, generation: int) -> AnnInfo:
    """Builds, tunes and writes the ``kind`` index of ``vectors`` (rows of works ``ids``)."""
    start = time.perf_counter()
    ids = np.asarray(ids, np.int64)
    held = np.zeros(len(ids), dtype=bool)  # tuning queries: held out of the build, added after
    held[np.random.default_rng(0).choice(len(ids), min(TUNING_QUERIES, len(ids) // 10), replace=False)] = True
    rest = np.flatnonzero(~held)
    index, params, n_train = build(vectors[rest], ids[rest], kind)
    setting, recall = tune(index, np.asarray(vectors[rest]), np.asarray(vectors[held]), id_rows_for(ids[rest]))
    index.add_with_ids(np.ascontiguousarray(vectors[held], dtype=np.float32), ids[held])
    info = AnnInfo(kind, f"{kind}-{generation}-{time.time_ns()}.faiss", len(ids), params,
                   {"efSearch" if kind == HNSW else "nprobe": int(setting)}, n_train, round(recall, 4),
                   memory_bytes(index), round(time.perf_counter() - start, 3), generation)
    write(folder, index, ids, info)
    return info


def memory_bytes(index: faiss.Index) -> int:
    """Bytes of the serialised index (its resident size when loaded)."""
    return int(faiss.serialize_index(index).nbytes)


def write(folder: Path, index: faiss.Index, ids: np.ndarray, info: AnnInfo) -> None:
    """The index file, its ids, then ``index_infos.json`` naming them (each complete before the next)."""
    d = folder / FOLDER
    d.mkdir(exist_ok=True)
    path = d / info.file
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    _sync_replace(tmp, path)
    ids_path = d / (info.file + ".ids.npy")
    with open(ids_path.with_name(ids_path.name + ".tmp"), "wb") as fh:
        np.save(fh, np.ascontiguousarray(ids, np.int64), allow_pickle=False)
    _sync_replace(ids_path.with_name(ids_path.name + ".tmp"), ids_path)
    infos = folder / INFOS
    with open(infos.with_name(infos.name + ".tmp"), "w", encoding="utf-8") as fh:
        json.dump(info.to_dict(), fh, indent=2, sort_keys=True)
    _sync_replace(infos.with_name(infos.name + ".tmp"), infos)
    for entry in d.iterdir():  # earlier indexes: no reader is pointed at them any more
        if not entry.name.startswith(info.file):
            entry.unlink(missing_ok=True)


def clear(folder: Path) -> None:
    """Drops the approximate index (the registry is small again, or flat was asked for)."""
    (folder / INFOS).unlink(missing_ok=True)
    d = folder / FOLDER
    if d.is_dir():
        for entry in d.iterdir():
            entry.unlink(missing_ok=True)


def read_info(folder: Path) -> AnnInfo | None:
    try:
        data = json.loads((folder / INFOS).read_text(encoding="utf-8"))
        return AnnInfo(**{k: data[k] for k in AnnInfo.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


@dataclass(frozen=True)
class AnnView:
    """A loaded approximate index as one snapshot uses it: the index (mapped
    read-only where FAISS can), its ids (sorted, with their snapshot rows),
    the selector masking works removed since, and the rows it does not cover."""

    index: Any
    info: AnnInfo
    sorted_ids: np.ndarray
    rows_of_sorted: np.ndarray  # snapshot row of each sorted id (-1: removed since)
    selector: Any
    delta_rows: np.ndarray  # snapshot rows the index does not hold (added since)
    keep_alive: tuple = ()  # FAISS objects the selector points into

    @property
    def dead(self) -> int:
        return int((self.rows_of_sorted < 0).sum())

    def search(self, vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, snapshot rows) of the ``k`` nearest live works, best first."""
        from mimicry.store.search import exact_search, merge_top

        q = np.ascontiguousarray(queries, dtype=np.float32)
        kk = min(k, self.index.ntotal)
        sims, rows = candidates(self.index, vectors, q, kk, self.setting, self.selector, self.rows_of)
        if kk < k:
            pad = k - kk
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        if len(self.delta_rows):
            ds, dr = exact_search(vectors, q, k, rows=self.delta_rows)
            sims, rows = merge_top(sims, rows, ds, dr, k)
        return sims, rows

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Snapshot rows of index ids (-1: not live)."""
        if not len(self.sorted_ids):
            return np.full(ids.shape, -1, np.int64)
        pos = np.clip(np.searchsorted(self.sorted_ids, ids), 0, len(self.sorted_ids) - 1)
        return np.where((ids >= 0) & (self.sorted_ids[pos] == ids), self.rows_of_sorted[pos], -1)

    @property
    def setting(self) -> int:
        return int(next(iter(self.info.search.values())))


def load(folder: Path, work_ids: np.ndarray) -> AnnView | None:
    """The approximate index named by ``index_infos.json`` lined up with a
    snapshot's ``work_ids``, or None (none, or unreadable: search exactly)."""
    info = read_info(folder)
    if info is None:
        return None
    path = folder / FOLDER / info.file
    try:
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            index = faiss.read_index(str(path))
        ann_ids = np.load(folder / FOLDER / (info.file + ".ids.npy"), allow_pickle=False)
    except (OSError, RuntimeError, ValueError):
        return None
    order = np.argsort(ann_ids, kind="stable")
    sorted_ids = ann_ids[order]
    live_order = np.argsort(work_ids, kind="stable")
    live_sorted = work_ids[live_order]
    pos = np.clip(np.searchsorted(live_sorted, sorted_ids), 0, max(0, len(live_sorted) - 1))
    present = (len(live_sorted) > 0) & (live_sorted[pos] == sorted_ids) if len(live_sorted) else np.zeros(len(sorted_ids), bool)
    rows_of_sorted = np.where(present, live_order[pos], -1).astype(np.int64)
    covered = np.zeros(len(work_ids), dtype=bool)
    covered[rows_of_sorted[rows_of_sorted >= 0]] = True
    dead_ids = np.ascontiguousarray(sorted_ids[rows_of_sorted < 0])
    batch = faiss.IDSelectorBatch(dead_ids) if len(dead_ids) else None
    selector = faiss.IDSelectorNot(batch) if batch is not None else None
    return AnnView(index, info, sorted_ids, rows_of_sorted, selector, np.flatnonzero(~covered),
                   (batch, dead_ids))


def needs_rebuild(view: AnnView | None, kind: str, n_live: int) -> bool:
    """Whether a writer should (re)build the approximate index for ``n_live`` works."""
    want = resolve(kind, n_live)
    if want == FLAT:
        return view is not None
    if view is None or view.info.type != want:
        return True
    indexed = max(1, view.info.vectors)
    return len(view.delta_rows) > REBUILD_NEW_SHARE * indexed or view.dead > REBUILD_DEAD_SHARE * indexed


def _sync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
