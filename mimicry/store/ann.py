"""Approximate nearest-neighbour indexes for hub-scale registries: types and files.

Index types (``mimicry index --index-type``, recorded in the pin):

- ``flat``: exact search over the vectors (no extra file). Right for small
  registries, where a matrix product is already fast.
- ``ivf``: an inverted file, ``nlist = 4 sqrt(n)`` lists (16 to 65,536, at most n / 39),
  trained on up to 64 vectors per list (at most 100,000) drawn from the portfolio.
- ``hnsw``: a graph (HNSW, 32 links per node).

Both work on compact codes: vectors wider than 256 dimensions are first
projected by PCA, then stored in 8-bit scalar quantisation; candidates are
re-ranked exactly against the full-precision vectors, so similarities a scan
reports are always exact (:mod:`mimicry.store.ann_faiss`: building, tuning,
searching).

- ``auto``: ``flat`` below :data:`AUTO_FLAT_MAX` works (docs, "Scale": below
  it exact search costs a small share of embedding the query, about 4 ms
  against 30 ms here, and is exact), ``hnsw`` from there: at 100k and 1M works
  it measured faster than IVF at the same recall (1.6 against 3.8 ms a query
  at 1M, recall@10 0.961 both) for 1.09x the raw vectors' memory, at the cost
  of a longer build (223 against 59 s at 1M).

The approximate index is derived data. Its files (``ann/<file>`` and its id
list ``ann/<file>.ids.npy``, labels being positions in it) are written complete
(temporary name, fsync, rename) and never changed; the catalogue names the
one in use (its :class:`AnnInfo`: type, parameters, training size, measured
recall, memory) in the same row set as the rest of the committed state, so a
reader loads the index of the state it read; ``index_infos.json`` is a
readable copy, written after, as autofaiss writes it. The files an install
replaces stay until the next install or commit, so a reader of the state
before still finds them (one that finds them gone reads the state again). A
reader that finds no usable index searches exactly, so a kill at any moment
costs speed, never results. When builds run, and under which lock:
:mod:`mimicry.store.ann_builds`.
"""

from __future__ import annotations

import fcntl
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mimicry.errors import InputError
from mimicry.store.durable import sync_replace
from mimicry.store.lock import flock_until

FLAT, IVF, HNSW, AUTO = "flat", "ivf", "hnsw", "auto"
KINDS = (FLAT, IVF, HNSW, AUTO)
FOLDER = "ann"
INFOS = "index_infos.json"
LOCKFILE = "ann.lock"
#: ``auto`` stays exact below this many works (docs, "Scale").
AUTO_FLAT_MAX = 20_000
#: An approximate index needs at least this many vectors (smaller registries stay flat).
MIN_ANN = 1000
#: Rebuild when works added since pass this share of the indexed ones, or removed ones pass the other.
REBUILD_NEW_SHARE = 0.10
REBUILD_DEAD_SHARE = 0.20


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
        return FLAT if n < AUTO_FLAT_MAX else HNSW
    return kind


@dataclass
class AnnInfo:
    """What one built approximate index is (the catalogue's row, ``index_infos.json``)."""

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

    @staticmethod
    def from_dict(data: dict[str, Any]) -> AnnInfo:
        return AnnInfo(**{k: data[k] for k in AnnInfo.__dataclass_fields__ if k in data})


def encode(info: AnnInfo | None) -> str:
    """The catalogue's value for the index in use (empty: none)."""
    return "" if info is None else json.dumps(info.to_dict(), sort_keys=True)


def decode(text: str | None, folder: Path) -> AnnInfo | None:
    """The index a catalogue value names (None: none, or unreadable: search
    exactly). 0.1.0 stored the file name alone, its info in ``index_infos.json``:
    that copy is used while it names the same file."""
    if not text:
        return None
    try:
        if text.startswith("{"):
            return AnnInfo.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError):
        return None
    info = read_info(folder)
    return info if info is not None and info.file == text else None


def files(folder: Path, file: str) -> tuple[Path, Path]:
    """The index file named ``file`` and its id list."""
    return folder / FOLDER / file, folder / FOLDER / (file + ".ids.npy")


def write(folder: Path, index: Any, ids: np.ndarray, info: AnnInfo) -> None:
    """The index file, then its ids (each complete before the next). Nothing
    names them until the catalogue commits ``info``."""
    import faiss

    (folder / FOLDER).mkdir(exist_ok=True)
    path, ids_path = files(folder, info.file)
    faiss.write_index(index, str(_tmp(path)))
    sync_replace(_tmp(path), path)
    info.memory_bytes = path.stat().st_size  # what a reader loads into memory
    with open(_tmp(ids_path), "wb") as fh:
        np.save(fh, np.ascontiguousarray(ids, np.int64), allow_pickle=False)
    sync_replace(_tmp(ids_path), ids_path)


def write_copy(folder: Path, info: AnnInfo | None) -> None:
    """Rewrites the readable copy, ``index_infos.json`` (atomically), after the
    catalogue committed ``info``; removes it when no index is in use."""
    infos = folder / INFOS
    if info is None:
        infos.unlink(missing_ok=True)
        return
    with open(_tmp(infos), "w", encoding="utf-8") as fh:
        json.dump(info.to_dict(), fh, indent=2, sort_keys=True)
    sync_replace(_tmp(infos), infos)


def read_info(folder: Path) -> AnnInfo | None:
    """The readable copy (None: none, or unreadable)."""
    try:
        return AnnInfo.from_dict(json.loads((folder / INFOS).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        return None


@contextmanager
def building(folder: Path, wait_s: float = 0.0) -> Iterator[bool]:
    """The build lock (``ann.lock``, an exclusive ``flock``): yields True while
    this caller holds it, False when another holder (a build, in this process
    or another, or a brief :func:`remove_stale`) kept it for ``wait_s``. A
    build's files are written under it, so :func:`remove_stale` never deletes
    a build in progress."""
    with open(folder / LOCKFILE, "a+") as fh:
        if not flock_until(fh, time.monotonic() + wait_s):
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale(folder: Path, keep: Sequence[str]) -> None:
    """Deletes files under ``ann/`` of indexes not in ``keep`` (an interrupted
    build's, or replaced ones no reader can be loading), and temporaries;
    nothing while a build runs."""
    d = folder / FOLDER
    (folder / (INFOS + ".tmp")).unlink(missing_ok=True)
    if not d.is_dir():
        return
    with building(folder) as idle:
        if not idle:
            return
        for entry in d.iterdir():
            if entry.name.endswith(".tmp") or not any(k and entry.name.startswith(k) for k in keep):
                entry.unlink(missing_ok=True)


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def needs_rebuild(view: Any, kind: str, n_live: int) -> bool:
    """Whether a writer should (re)build the approximate index for ``n_live``
    works, given the one a snapshot uses (an :class:`~mimicry.store.ann_faiss.AnnView`, or None)."""
    want = resolve(kind, n_live)
    if want == FLAT:
        return view is not None
    if view is None or view.info.type != want:
        return True
    indexed = max(1, view.info.vectors)
    return len(view.delta_rows) > REBUILD_NEW_SHARE * indexed or view.dead > REBUILD_DEAD_SHARE * indexed
