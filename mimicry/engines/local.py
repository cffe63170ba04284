"""The local engine: decode in parallel with the model, batch, report bad files.

Decoding and preprocessing run on a thread pool (Pillow and torch release the
GIL), at most ``prefetch`` images ahead of the model, so memory stays bounded on
folders of any size while the model is kept busy. Images are decoded as the
embedder's recipe says (``recipe.draft_size``), from paths or bytes alike. The
model runs as soon as one forward's worth (``embedder.forward_batch``) is
decoded; how images are grouped into forward passes never moves a vector.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Hashable, Iterable, Iterator, Sequence

import numpy as np
import torch

from mimicry.backbones import Embedder
from mimicry.engines import Embedded, ProgressFn
from mimicry.errors import ImageError
from mimicry.images import ImageSource, decode, source_name


class LocalEngine:
    """Embeds with one embedder in this process (see the module docstring)."""

    name = "local"

    def __init__(self, embedder: Embedder | Callable[[], Embedder], workers: int | None = None) -> None:
        """``embedder``, or a function that loads it on first use; ``workers``
        decoding threads (None: :func:`default_workers`)."""
        self._embedder = embedder
        self.workers = workers

    @property
    def embedder(self) -> Embedder:
        if callable(self._embedder) and not hasattr(self._embedder, "embed_tensors"):
            self._embedder = self._embedder()
        return self._embedder  # type: ignore[return-value]

    def embed(self, sources: Sequence[ImageSource], *, keys: Sequence[Hashable] | None = None,
              batch_size: int = 32, progress: ProgressFn | None = None,
              stage: str = "embedding") -> Iterator[Embedded]:
        """Embeds ``sources`` (paths or :class:`~mimicry.images.ImageBytes`) in
        stretches of ``batch_size`` readable images, in input order; every
        input comes back exactly once, embedded or failed, named by its key
        (``keys``, one per source; default: the source itself)."""
        sources = list(sources)
        keyed = list(zip(keys, sources)) if keys is not None else [(x, x) for x in sources]
        embedder = self.embedder
        workers = self.workers or default_workers()
        prefetch = max(2 * batch_size, 4 * workers)
        done = 0
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mimicry-decode") as pool:
            queue = _Prefetch(pool, embedder, iter(keyed), prefetch)
            while queue.pending:
                stretch = _stretch(embedder, queue, batch_size)
                done += len(stretch)
                if progress is not None:
                    progress(stage, done, len(sources))
                yield stretch


class _Prefetch:
    """Inputs submitted for decoding, at most ``limit`` ahead, in input order."""

    def __init__(self, pool: ThreadPoolExecutor, embedder: Embedder,
                 inputs: Iterator[tuple[Hashable, ImageSource]], limit: int) -> None:
        self.pool, self.embedder, self.inputs, self.limit = pool, embedder, inputs, limit
        self.pending: deque[tuple[Hashable, Future]] = deque()
        self.fill()

    def fill(self) -> None:
        while len(self.pending) < self.limit:
            try:
                key, source = next(self.inputs)
            except StopIteration:
                return
            self.pending.append((key, self.pool.submit(prepare, self.embedder, source)))

    def next(self) -> tuple[Hashable, tuple[torch.Tensor, str] | ImageError]:
        """The next input's key and decoded tensor and sha256 (or its error)."""
        key, fut = self.pending.popleft()
        self.fill()
        return key, fut.result()


def _stretch(embedder: Embedder, queue: _Prefetch, batch_size: int) -> Embedded:
    """The next stretch: inputs until ``batch_size`` are readable (or none are
    left), the model run every ``forward_batch`` images as they arrive."""
    step = max(1, min(batch_size, int(getattr(embedder, "forward_batch", batch_size))))
    keys: list[Hashable] = []
    tensors: list[torch.Tensor] = []
    parts: list[np.ndarray] = []
    hashes: list[str] = []
    failed: list[tuple[Hashable, ImageError]] = []
    while queue.pending and len(tensors) < batch_size:
        key, out = queue.next()
        if isinstance(out, ImageError):
            failed.append((key, out))
            continue
        keys.append(key)
        tensors.append(out[0])
        hashes.append(out[1])
        # Run the model as soon as one forward's worth is ready,
        # so it starts after a few decodes, not a whole batch's.
        if len(tensors) % step == 0:
            parts.append(embedder.embed_tensors(torch.stack(tensors[-step:])))
    if len(tensors) % step:
        parts.append(embedder.embed_tensors(torch.stack(tensors[-(len(tensors) % step):])))
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)
    return Embedded(keys, vectors, hashes, failed)


def prepare(embedder: Embedder, source: ImageSource) -> tuple[torch.Tensor, str] | ImageError:
    """``source`` decoded as the embedder's recipe says and preprocessed, with
    its bytes' sha256; any failure comes back as that file's :class:`ImageError`."""
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

