"""FAISS vector files, written so that a kill at any moment leaves a loadable index.

Each committed state of the index has its own file, ``vectors.<generation>.faiss``.
A write makes the next generation's file complete on disk (temporary name, fsync,
``os.replace``) *before* the catalogue commits the new generation number in the
same SQLite transaction as its rows. So the committed generation always names a
complete file that matches the committed rows; files of other generations are
leftovers of an interrupted write and are removed by the next writer.
"""

from __future__ import annotations

import re
from pathlib import Path

import faiss
import numpy as np

from mimicry.errors import CorruptIndexError
from mimicry.store.durable import sync_replace

_FILE_RE = re.compile(r"^vectors\.(\d+)\.faiss$")


def new_index(dim: int) -> faiss.IndexIDMap2:
    """An empty exact inner-product index whose vectors carry explicit 64-bit ids."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def file_for(folder: Path, generation: int) -> Path:
    return folder / f"vectors.{generation}.faiss"


def load(folder: Path, generation: int, dim: int) -> faiss.IndexIDMap2:
    """The vectors of ``generation`` (an empty index for generation 0).
    Raises ``FileNotFoundError`` when a writer has replaced that generation
    meanwhile (read the committed generation again), :class:`CorruptIndexError`
    when the file is not an index of the pinned dimension."""
    if generation == 0:
        return new_index(dim)
    path = file_for(folder, generation)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        index = faiss.read_index(str(path))  # already the concrete type; never downcast a temporary
    except RuntimeError as exc:
        if not path.exists():
            raise FileNotFoundError(path) from None
        raise CorruptIndexError(f"{path}: unreadable vectors ({exc})") from None
    if not isinstance(index, faiss.IndexIDMap2) or index.d != dim:
        raise CorruptIndexError(f"{path}: not an IndexIDMap2 of dimension {dim} "
                                f"({type(index).__name__}, dimension {index.d})")
    return index


def write(folder: Path, generation: int, index: faiss.Index) -> Path:
    """Writes ``index`` as ``generation``'s file, complete and synced, and returns its path."""
    final = file_for(folder, generation)
    tmp = final.with_name(final.name + ".tmp")
    faiss.write_index(index, str(tmp))
    sync_replace(tmp, final)
    return final


def remove_stale(folder: Path, keep: int) -> None:
    """Deletes vector files (and temporaries) of every generation but ``keep``."""
    for entry in folder.iterdir():
        m = _FILE_RE.match(entry.name)
        if (m and int(m.group(1)) != keep) or entry.name.endswith(".faiss.tmp"):
            try:
                entry.unlink()
            except FileNotFoundError:
                pass


def add(index: faiss.IndexIDMap2, vectors: np.ndarray, ids: list[int]) -> None:
    if len(ids):
        index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
        )


def all_vectors(index: faiss.IndexIDMap2) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of everything stored, in storage order."""
    n = index.ntotal
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, index.d), dtype=np.float32)
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    flat = faiss.downcast_index(index.index)
    vecs = faiss.rev_swig_ptr(flat.get_xb(), n * index.d).reshape(n, index.d).copy()
    return ids, vecs
