"""Where embedding runs, and what it hands on.

Engines: ``local`` (threads in this process, the default,
:mod:`mimicry.engines.local`) or ``ray`` (a Ray cluster through Ray Data,
:mod:`mimicry.engines.ray`; ``pip install .[ray]``). Every engine is an
:class:`Engine`: it embeds a stream of inputs and yields :class:`Embedded`
stretches, in input order: each input exactly once, either embedded (its key,
its vector, the sha256 of the bytes it came from) or failed (its key and the
:class:`~mimicry.errors.ImageError` saying why). Consumers key inputs as they
need: by the source itself (the default) or by position. So an index is
written exactly as it is locally whichever engine embedded it.

Progress is reported through a callback, ``progress(stage, done, total)``;
faces draw it (the CLI as a bar on stderr), engines print nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from mimicry.errors import ImageError, InputError
from mimicry.results import Skipped

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.backbones import Embedder
    from mimicry.images import ImageSource

ENGINES = ("local", "ray")

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


class Engine(Protocol):
    """Embeds inputs stretch by stretch.

    Promise: :meth:`embed` yields stretches in input order, and every input
    appears exactly once across them, embedded or failed, named by its key
    (``keys[i]`` for ``sources[i]``; without ``keys``, the source itself).
    """

    #: The engine's name as ``--engine`` takes it.
    name: str

    def embed(self, sources: Sequence[ImageSource], *, keys: Sequence[Hashable] | None = None,
              batch_size: int = 32, progress: ProgressFn | None = None,
              stage: str = "embedding") -> Iterator[Embedded]:
        ...


def make_engine(name: str, embedder: Callable[[], Embedder], pin: Callable[[], Mapping[str, Any]], *,
                device: str = "cpu", address: str | None = None, ray_threads: int = 1,
                runtime: str | None = None) -> Engine:
    """The engine called ``name``: ``local`` embeds with ``embedder()`` (called
    on first use), ``ray`` loads the model ``pin()`` names on each worker
    (``device``, ``runtime``, ``ray_threads`` threads each) on the cluster at
    ``address`` (None: a local one). Any other name is :class:`InputError`."""
    if name == "local":
        from mimicry.engines.local import LocalEngine

        return LocalEngine(embedder)
    if name == "ray":
        from mimicry.engines.ray import RayEngine

        return RayEngine(dict(pin()), device=device, address=address, threads=ray_threads, runtime=runtime)
    raise InputError(f"--engine {name!r}: use one of {', '.join(ENGINES)}")
