"""Storage of an index: pin, catalogue, vectors, lock and commits.

:class:`Store` is the one entry point: :meth:`Store.snapshot` for reads (an
immutable :class:`Snapshot`), :meth:`Store.writer` for writes (a :class:`Writer`).
The write side (:class:`Writer`, :class:`NewWork`) is imported on first use,
so a read loads none of it.
"""

from __future__ import annotations

from typing import Any

from mimicry.store.catalogue import Work
from mimicry.store.pin import Pin
from mimicry.store.snapshot import Snapshot
from mimicry.store.store import Store

__all__ = ["NewWork", "Pin", "Snapshot", "Store", "Work", "Writer"]


def __getattr__(name: str) -> Any:
    if name in ("NewWork", "Writer"):
        from mimicry.store import writer

        return getattr(writer, name)
    raise AttributeError(f"module 'mimicry.store' has no attribute {name!r}")
