"""Storage of an index: pin, catalogue, vectors, lock, commits and sync.

:class:`Store` is the one entry point: :meth:`Store.snapshot` for reads (an
immutable :class:`Snapshot`), :meth:`Store.writer` for writes (a :class:`Writer`).
"""

from mimicry.store.catalogue import Work
from mimicry.store.pin import Pin
from mimicry.store.snapshot import Snapshot
from mimicry.store.store import Store
from mimicry.store.writer import NewWork, Writer

__all__ = ["NewWork", "Pin", "Snapshot", "Store", "Work", "Writer"]
