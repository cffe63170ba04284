"""Opening an index: the pin checked against the model, a new index pinned
under the write lock, an older recipe rebuilt on request.

Promises:
- An index opens only with its own model and recipe; anything else is
  :class:`~mimicry.errors.PinMismatchError` saying what to do.
- Two processes creating the same index never overwrite each other's pin: the
  second one opens what the first made (and must be the same model).
- Creating (``mimicry index``) on an index of an older schema that numbered
  steps reach (:mod:`mimicry.store.migrations`) brings it forward once, under
  the write lock, before anything else; readers never migrate, and an index
  no step reaches is refused, unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mimicry.backbones import DEFAULT_MODEL, Embedder, load_embedder
from mimicry.errors import PinMismatchError
from mimicry.store import Pin, Store

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.engines import ProgressFn
    from mimicry.index import StyleIndex

Index = TypeVar("Index", bound="StyleIndex")


def _upgraded(store: Store) -> Pin:
    """The pin, after the numbered format steps an older schema has (run by a
    writer, under the write lock, when it opens the index; readers never migrate)."""
    from mimicry.store import migrations
    from mimicry.store.pin import SCHEMA_VERSION

    pin = store.read_pin()
    if pin.schema_version < SCHEMA_VERSION and migrations.steps(pin.schema_version, SCHEMA_VERSION):
        with store.writer(build=False):
            pass
        pin = store.read_pin()
    return pin


def create_index(cls: type[Index], path: str | Path, model: str, where: tuple[str, str | None],
                 embedder: Embedder | None, rebuild: bool, drop_unreadable: bool, progress: ProgressFn | None,
                 index_type: str | None) -> Index:
    """What :meth:`mimicry.index.StyleIndex.create` promises (``where``: device and runtime)."""
    from mimicry.store.ann import AUTO, check_kind

    folder = Path(path)
    if index_type is not None:
        check_kind(index_type)
    if Store.exists(folder):
        store = Store.open(folder)
        pin = _upgraded(store)
        emb = embedder or load_embedder(model if model != DEFAULT_MODEL else pin.model_spec, *where)
    else:
        emb = embedder or load_embedder(model, *where)
        store = Store.create(folder, Pin.for_embedder(emb, model, index_type or AUTO))
        pin = store.read_pin()  # another creator may have pinned it first
    if index_type is not None and pin.index_type != index_type and pin.same_model(emb):
        with store.writer() as w:
            w.set_index_type(index_type)
    try:
        pin.check(emb, folder)
    except PinMismatchError:
        if not (rebuild and pin.upgradable_to(emb)):
            raise
        ix = cls(store, emb, where[0], runtime=where[1])
        ix._rebuilt = ix.rebuild(progress=progress, drop_unreadable=drop_unreadable)
        return ix
    return cls(store, emb, where[0], runtime=where[1])
