"""What embedding hands on, and the pieces every engine shares.

An engine (:mod:`mimicry.engines`) embeds a stream of inputs and yields
:class:`Embedded` stretches, in input order: each input exactly once, either
embedded (its key, its vector, the sha256 of the bytes it came from) or failed
(its key and the :class:`~mimicry.errors.ImageError` saying why). Consumers key
inputs as they need: by the source itself (the default) or by position.

Progress is reported through a callback, ``progress(stage, done, total)``;
faces draw it (the CLI as a bar on stderr), engines print nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable

import numpy as np
import torch

from mimicry.backbones.base import Embedder
from mimicry.errors import ImageError
from mimicry.images import ImageSource, decode, source_name
from mimicry.results import Skipped

#: ``progress(stage, done, total)``: called as images are embedded.
ProgressFn = Callable[[str, int, int], None]


@dataclass
class Embedded:
    """One stretch of embedded inputs.

    ``keys[i]`` names the input whose vector is ``vectors[i]`` and whose bytes
    hash to ``sha256[i]``, in input order; ``failed`` holds the inputs of the
    stretch that could not be used, in input order, each with its error (whose
    ``path`` and ``reason`` are the :class:`~mimicry.results.Skipped` line).
    """

    keys: list[Hashable]
    vectors: np.ndarray
    sha256: list[str]
    failed: list[tuple[Hashable, ImageError]] = field(default_factory=list)

    def __len__(self) -> int:
        """Inputs the stretch accounts for, embedded or failed."""
        return len(self.keys) + len(self.failed)

    @property
    def errors(self) -> list[ImageError]:
        """The failures' errors, in input order."""
        return [e for _, e in self.failed]

    def skipped(self) -> list[Skipped]:
        """The failures as report lines (path and reason), in input order."""
        return [Skipped(e.path, e.reason) for _, e in self.failed]

    @classmethod
    def empty(cls, dim: int) -> Embedded:
        """No inputs, vectors of ``dim`` columns."""
        return cls([], np.zeros((0, dim), dtype=np.float32), [], [])

    @classmethod
    def gather(cls, stretches: Iterable[Embedded], dim: int) -> Embedded:
        """A stream of stretches as one, in stream order (``dim``: for an empty stream)."""
        out = cls.empty(dim)
        parts = [out.vectors]
        for s in stretches:
            out.keys += s.keys
            out.sha256 += s.sha256
            out.failed += s.failed
            parts.append(np.asarray(s.vectors, dtype=np.float32).reshape(-1, dim))
        out.vectors = np.concatenate(parts)
        return out


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

