"""The embedding loop: decode in parallel with the model, batch, report bad files.

Decoding and preprocessing run on a thread pool (Pillow and torch release the
GIL), at most ``prefetch`` images ahead of the model, so memory stays bounded on
folders of any size while the model is kept busy.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from mimicry.backbones.base import Embedder
from mimicry.images import ImageError, load_image

#: JPEGs are decoded at reduced scale (in the DCT, which also anti-aliases),
#: never below this many pixels on the short side (see
#: :func:`mimicry.images.load_image`); the backbones here take 224 px inputs.
DRAFT_SIZE = 224


@dataclass
class EmbeddedBatch:
    """Vectors for ``paths`` (same order); ``errors`` are the files of this stretch
    that could not be used."""

    paths: list[Path]
    vectors: np.ndarray
    errors: list[ImageError]


def _prepare(embedder: Embedder, path: Path) -> torch.Tensor | ImageError:
    try:
        return embedder.preprocess(load_image(path, draft_size=DRAFT_SIZE))
    except ImageError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - any decode failure is that file's alone
        return ImageError(path, f"could not be prepared ({type(exc).__name__}: {exc})")


def default_workers() -> int:
    """Decoding threads: the cores beyond the first, at least one."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def embed_paths(
    embedder: Embedder,
    paths: Sequence[str | Path],
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = False,
    desc: str = "embedding",
) -> Iterator[EmbeddedBatch]:
    """Embeds ``paths`` in batches, in order; unreadable files come back as errors.

    Every path appears exactly once across the yielded batches, either in
    ``paths`` (with its vector) or in ``errors``.
    """
    paths = [Path(p) for p in paths]
    workers = workers or default_workers()
    prefetch = max(2 * batch_size, 4 * workers)
    bar = _progress(len(paths), progress, desc)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mimicry-decode") as pool:
        pending: deque[tuple[Path, Future]] = deque()
        it = iter(paths)

        def fill() -> None:
            while len(pending) < prefetch:
                try:
                    p = next(it)
                except StopIteration:
                    return
                pending.append((p, pool.submit(_prepare, embedder, p)))

        fill()
        while pending:
            ok_paths: list[Path] = []
            tensors: list[torch.Tensor] = []
            errors: list[ImageError] = []
            while pending and len(tensors) < batch_size:
                p, fut = pending.popleft()
                fill()
                out = fut.result()
                if isinstance(out, ImageError):
                    errors.append(out)
                else:
                    ok_paths.append(p)
                    tensors.append(out)
            if tensors:
                vectors = embedder.embed_tensors(torch.stack(tensors))
            else:
                vectors = np.zeros((0, embedder.dim), dtype=np.float32)
            if bar is not None:
                bar.update(len(tensors) + len(errors))
            yield EmbeddedBatch(ok_paths, vectors, errors)
    if bar is not None:
        bar.close()


def embed_all(
    embedder: Embedder,
    paths: Sequence[str | Path],
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "embedding",
) -> tuple[list[Path], np.ndarray, list[ImageError]]:
    """:func:`embed_paths` gathered: (readable paths, their vectors as rows, errors)."""
    ok: list[Path] = []
    vecs: list[np.ndarray] = []
    errors: list[ImageError] = []
    for batch in embed_paths(embedder, paths, batch_size=batch_size, progress=progress, desc=desc):
        ok += batch.paths
        vecs.append(batch.vectors)
        errors += batch.errors
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, embedder.dim), dtype=np.float32)
    return ok, vectors, errors


def embed_images(embedder: Embedder, images: Iterable, batch_size: int = 32) -> np.ndarray:
    """Embeds already-decoded RGB PIL images (no file I/O), one row per image."""
    out = []
    batch: list[torch.Tensor] = []
    for img in images:
        batch.append(embedder.preprocess(img))
        if len(batch) == batch_size:
            out.append(embedder.embed_tensors(torch.stack(batch)))
            batch = []
    if batch:
        out.append(embedder.embed_tensors(torch.stack(batch)))
    if not out:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.concatenate(out)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not sys.stderr.isatty())
