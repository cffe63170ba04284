"""Where embedding runs: ``local`` (threads in this process, the default,
:mod:`mimicry.engines.local`) or ``ray`` (a Ray cluster through Ray Data,
:mod:`mimicry.engines.ray`; ``pip install .[ray]``).

Every engine is an :class:`Engine`: it yields the same
:class:`~mimicry.embedding.Embedded` stretches to the same consumers, so an
index is written exactly as it is locally whichever engine embedded it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator, Mapping, Protocol, Sequence

from mimicry.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.backbones.base import Embedder
    from mimicry.embedding import Embedded, ProgressFn
    from mimicry.images import ImageSource

ENGINES = ("local", "ray")


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
                device: str = "cpu", address: str | None = None, ray_threads: int = 1) -> Engine:
    """The engine called ``name``: ``local`` embeds with ``embedder()`` (called
    on first use), ``ray`` loads the model ``pin()`` names on each worker
    (``device``, ``ray_threads`` torch threads each) on the cluster at
    ``address`` (None: a local one). Any other name is :class:`InputError`."""
    if name == "local":
        from mimicry.engines.local import LocalEngine

        return LocalEngine(embedder)
    if name == "ray":
        from mimicry.engines.ray import RayEngine

        return RayEngine(dict(pin()), device=device, address=address, threads=ray_threads)
    raise InputError(f"--engine {name!r}: use one of {', '.join(ENGINES)}")
