"""A cache of embedded vectors by content, for re-running evaluations.

Evaluating against a background of thousands of images re-embeds them on every
run; this cache keys each vector by the sha256 of the file's bytes, in one
SQLite file per model and recipe (``vectors-<key>.sqlite`` under the cache
folder), so a second run embeds only what it has not seen. Vectors are stored
as raw float32 bytes: nothing in the cache is ever unpickled or run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from mimicry.backbones import Embedder
from mimicry.engines import Embedded, ProgressFn
from mimicry.engines.local import LocalEngine
from mimicry.errors import ImageError
from mimicry.images import sha256_file


def cache_file(embedder: Embedder, folder: Path) -> Path:
    """The cache file of ``embedder``'s model and recipe under ``folder``."""
    ident = json.dumps([embedder.backbone_id, embedder.weights_sha256, embedder.recipe.to_dict()],
                       sort_keys=True)
    return Path(folder) / f"vectors-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.sqlite"


def embed_cached(embedder: Embedder, paths: Sequence[Path], folder: Path, batch_size: int = 32,
                 progress: ProgressFn | None = None) -> Embedded:
    """``paths`` embedded as one :class:`~mimicry.engines.Embedded` keyed by
    path (readable ones in input order, then failures), embedding with the local
    engine only files whose bytes the cache has not seen."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(cache_file(embedder, folder), timeout=30)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS vectors (sha256 TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        failed: list[tuple[Path, ImageError]] = []
        hashes: dict[Path, str] = {}
        for p in paths:
            try:
                hashes[Path(p)] = sha256_file(p)
            except OSError as exc:
                failed.append((Path(p), ImageError(p, f"cannot read file ({exc.strerror or exc})")))
        found: dict[str, np.ndarray] = {}
        keys = sorted(set(hashes.values()))
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = db.execute(f"SELECT sha256, vector FROM vectors WHERE sha256 IN ({','.join('?' * len(chunk))})",
                              chunk)
            for sha, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if len(vec) == embedder.dim:
                    found[sha] = vec
        missing = [p for p, sha in hashes.items() if sha not in found]
        new = Embedded.gather(LocalEngine(embedder).embed(missing, batch_size=batch_size, progress=progress,
                                                          stage="embedding"), embedder.dim)
        failed += new.failed
        with db:
            db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                           [(sha, np.asarray(v, np.float32).tobytes()) for sha, v in zip(new.sha256, new.vectors)])
        for p, sha, v in zip(new.keys, new.sha256, new.vectors):
            hashes[p] = sha
            found[sha] = v
    finally:
        db.close()
    bad = {Path(e.path) for _, e in failed}
    kept = [Path(p) for p in paths if Path(p) in hashes and Path(p) not in bad and hashes[Path(p)] in found]
    out = Embedded.empty(embedder.dim)
    out.failed = failed
    if kept:
        out.keys, out.sha256 = list(kept), [hashes[p] for p in kept]
        out.vectors = np.stack([found[hashes[p]] for p in kept])
    return out
