"""The embedding loop: decode in parallel with the model, batch, report bad files.

Decoding and preprocessing run on a thread pool (Pillow and torch release the
GIL), at most ``prefetch`` images ahead of the model, so memory stays bounded on
folders of any size while the model is kept busy. Images are decoded as the
embedder's recipe says (``recipe.draft_size``), from paths or bytes alike.

Progress is reported through a callback, ``progress(stage, done, total)``;
faces draw it (the CLI as a bar on stderr), the loop prints nothing.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from mimicry.backbones.base import Embedder
from mimicry.errors import ImageError
from mimicry.images import ImageSource, decode, source_name

#: ``progress(stage, done, total)``: called as images are embedded.
ProgressFn = Callable[[str, int, int], None]


@dataclass
class EmbeddedBatch:
    """Vectors for ``sources`` (same order) and the sha256 of each one's bytes;
    ``errors`` are the inputs of this stretch that could not be used."""

    sources: list[ImageSource]
    vectors: np.ndarray
    sha256: list[str]
    errors: list[ImageError]
    failed: list[ImageSource]  # the inputs of ``errors``, same order


def _prepare(embedder: Embedder, source: ImageSource) -> tuple[torch.Tensor, str] | ImageError:
    try:
        decoded = decode(source, draft_size=embedder.recipe.draft_size)
        return embedder.preprocess(decoded.image), decoded.sha256
    except ImageError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - any decode failure is that file's alone
        return ImageError(source_name(source), f"could not be prepared ({type(exc).__name__}: {exc})")


def default_workers() -> int:
    """Decoding threads: the cores beyond the first, at least one."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def embed_sources(
    embedder: Embedder,
    sources: Sequence[ImageSource],
    batch_size: int = 32,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    stage: str = "embedding",
    keys: Sequence[object] | None = None,
) -> Iterator[EmbeddedBatch]:
    """Embeds ``sources`` (paths or :class:`~mimicry.images.ImageBytes`) in
    batches, in order; unreadable ones come back as errors.

    Every source appears exactly once across the yielded batches, either in
    ``sources`` (with its vector) or in ``errors``. With ``keys`` (one per
    source), batches name inputs by their key instead of the source itself.
    """
    sources = list(sources)
    keyed = list(zip(keys, sources)) if keys is not None else [(x, x) for x in sources]
    workers = workers or default_workers()
    step = max(1, min(batch_size, int(getattr(embedder, "forward_batch", batch_size))))
    prefetch = max(2 * batch_size, 4 * workers)
    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mimicry-decode") as pool:
        pending: deque[tuple[object, Future]] = deque()
        it = iter(keyed)

        def fill() -> None:
            while len(pending) < prefetch:
                try:
                    key, s = next(it)
                except StopIteration:
                    return
                pending.append((key, pool.submit(_prepare, embedder, s)))

        fill()
        while pending:
            ok: list[ImageSource] = []
            tensors: list[torch.Tensor] = []
            parts: list[np.ndarray] = []
            hashes: list[str] = []
            errors: list[ImageError] = []
            failed: list[ImageSource] = []
            while pending and len(tensors) < batch_size:
                s, fut = pending.popleft()
                fill()
                out = fut.result()
                if isinstance(out, ImageError):
                    errors.append(out)
                    failed.append(s)
                else:
                    ok.append(s)
                    tensors.append(out[0])
                    hashes.append(out[1])
                    # Run the model as soon as one forward's worth is ready,
                    # so it starts after a few decodes, not a whole batch's.
                    if len(tensors) % step == 0:
                        parts.append(embedder.embed_tensors(torch.stack(tensors[-step:])))
            if len(tensors) % step:
                parts.append(embedder.embed_tensors(torch.stack(tensors[-(len(tensors) % step):])))
            vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)
            done += len(tensors) + len(errors)
            if progress is not None:
                progress(stage, done, len(sources))
            yield EmbeddedBatch(ok, vectors, hashes, errors, failed)


def embed_all(
    embedder: Embedder,
    sources: Sequence[ImageSource],
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    stage: str = "embedding",
    keys: Sequence[object] | None = None,
) -> tuple[list, np.ndarray, list[str], list[ImageError]]:
    """:func:`embed_sources` gathered: (readable sources, or their ``keys``; their
    vectors as rows; their sha256; errors)."""
    ok: list[ImageSource] = []
    vecs: list[np.ndarray] = []
    hashes: list[str] = []
    errors: list[ImageError] = []
    for batch in embed_sources(embedder, sources, batch_size=batch_size, progress=progress, stage=stage,
                               keys=keys):
        ok += batch.sources
        vecs.append(batch.vectors)
        hashes += batch.sha256
        errors += batch.errors
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, embedder.dim), dtype=np.float32)
    return ok, vectors, hashes, errors


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
