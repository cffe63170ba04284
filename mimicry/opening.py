"""Opening an index: the pin checked against the model, a new index pinned
under the write lock, format steps run, an older recipe rebuilt on request;
and what an opened index is (:func:`index_info`).

Promises:
- An index opens only with its own model and recipe; anything else is
  :class:`~mimicry.errors.PinMismatchError` saying what to do.
- Two processes creating the same index never overwrite each other's pin: the
  second one opens what the first made (and must be the same model).
- An index of an older schema that numbered steps reach
  (:mod:`mimicry.store.migrations`) is brought forward once, under the write
  lock, before it is read; one that no step reaches is refused, unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mimicry.backbones import DEFAULT_MODEL, Embedder, load_embedder
from mimicry.calibration import calibration_of, calibration_state, state_warnings
from mimicry.errors import PinMismatchError
from mimicry.results import IndexInfo
from mimicry.store import Pin, Snapshot, Store

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.embedding import ProgressFn
    from mimicry.index import StyleIndex

Index = TypeVar("Index", bound="StyleIndex")


def current_pin(store: Store) -> Pin:
    """The committed pin, after running the format steps an older schema has
    (under the write lock; nothing happens for a current index)."""
    from mimicry.store import migrations
    from mimicry.store.pin import SCHEMA_VERSION

    pin = store.read_pin()
    if pin.schema_version < SCHEMA_VERSION and migrations.steps(pin.schema_version, SCHEMA_VERSION):
        with store.writer(build=False):
            pass  # a writer runs the steps when it opens an older index
        pin = store.read_pin()
    return pin


def create_index(cls: type[Index], path: str | Path, model: str, device: str, embedder: Embedder | None,
                 rebuild: bool, drop_unreadable: bool, progress: ProgressFn | None,
                 index_type: str | None) -> Index:
    """What :meth:`mimicry.index.StyleIndex.create` promises."""
    from mimicry.store.ann import AUTO, check_kind

    folder = Path(path)
    if index_type is not None:
        check_kind(index_type)
    if Store.exists(folder):
        store = Store.open(folder)
        pin = current_pin(store)
        emb = embedder or load_embedder(model if model != DEFAULT_MODEL else pin.model_spec, device)
    else:
        emb = embedder or load_embedder(model, device)
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
        ix = cls(store, emb, device)
        ix._rebuilt = ix.rebuild(progress=progress, drop_unreadable=drop_unreadable)
        return ix
    return cls(store, emb, device)


def open_index(cls: type[Index], path: str | Path, device: str, model: str | None,
               embedder: Embedder | None, verify: bool) -> Index:
    """What :meth:`mimicry.index.StyleIndex.open` promises."""
    store = Store.open(Path(path))
    pin = current_pin(store)
    pin.check_current(store.folder)
    if embedder is None and model is not None:
        embedder = load_embedder(model, device)
    if embedder is not None:
        pin.check(embedder, store.folder)
    if verify:
        calibration_of(store.snapshot())
    return cls(store, embedder, device)


def index_info(folder: Path, snap: Snapshot) -> IndexInfo:
    """:class:`IndexInfo` of the committed state ``snap`` of the index at ``folder``."""
    pin = snap.pin
    assert pin is not None
    cal = calibration_of(snap)
    return IndexInfo(
        str(folder), pin.backbone_id, pin.model_spec, pin.weights_sha256, dict(pin.recipe),
        pin.dim, pin.schema_version, pin.package_version, dict(snap.artist_counts), len(snap.work_ids),
        snap.generation, calibration_state(snap), None if cal is None else cal.target_rate,
        0 if cal is None else cal.n_background, None if cal is None else cal.promise(),
        state_warnings(snap), (cal.calibrated_at or None) if cal is not None else None,
        {"type": pin.index_type, "in_use": snap.ann.info.type if snap.ann is not None else "flat",
         "infos": snap.ann.info.to_dict() if snap.ann is not None else None},
    )
