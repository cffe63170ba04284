"""When approximate indexes are built and installed, and under which locks.

Promises:
- Background builds: once a writer is done and has released the write lock,
  the index the registry now calls for (:func:`plan`, checked at every
  writer's end, so a build that failed or was killed is retried by the next
  writer) is built from the snapshot the writer left (:func:`run`), under a
  build lock of its own (``ann.lock``), inline or, with
  :attr:`Store.ann_in_background <mimicry.store.Store.ann_in_background>`, on a
  thread of its own. Other writers and readers go on meanwhile; only the
  install takes the write lock, for as long as a small commit, and only if
  the index is still pinned as it was and nobody installed another.
- Installs commit the new index's :class:`~mimicry.store.ann.AnnInfo` in the
  catalogue (``meta['ann']``, read in the same transaction as the rest of a
  state) and keep the files of the one they replace (``meta['previous_ann']``)
  until the next install or commit, so a reader of the state before still
  finds them.
- Re-pins (:func:`refresh`) build under the write lock: the old codes are
  never searched with the new vectors.
- A failure is logged, never raised: the writes stand, searches stay exact
  where the index does not reach.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from mimicry.store import ann as ann_io
from mimicry.store import ann_faiss
from mimicry.store.ann import AnnInfo
from mimicry.store.catalogue import ANN, PREVIOUS_ANN, Catalogue
from mimicry.store.snapshot import Snapshot

if TYPE_CHECKING:
    from mimicry.store.store import Store
    from mimicry.store.writer import Writer

log = logging.getLogger(__name__)

#: Catalogue keys: the index in use, and the one the last install replaced.
#: Builds one builder makes in a row when writes during a build call for another.
ROUNDS = 3
#: How long a builder waits for the build lock (held briefly by leftover cleaning).
LOCK_WAIT_S = 2.0


@dataclass(frozen=True)
class AnnPlan:
    """An approximate index to build after a writer: its kind, the snapshot
    the writer left (its vectors are what gets indexed), and the index file
    in use when it was planned (None: none), which it replaces."""

    kind: str
    snapshot: Snapshot
    replaces: str | None


def in_use(cat: Catalogue, store: Store) -> AnnInfo | None:
    """The index the catalogue names (inside the caller's transaction)."""
    return ann_io.decode(cat.get_meta(ANN), store.folder)


def view_for(store: Store, info: AnnInfo | None, work_ids: np.ndarray) -> ann_faiss.AnnView | None:
    """The view of index ``info`` for ``work_ids`` (``FileNotFoundError``: its files are gone)."""
    return None if info is None else ann_faiss.load(store.folder, info, work_ids, store._ann_cache)


def with_view(store: Store, cat: Catalogue, snap: Snapshot) -> Snapshot:
    """``snap`` with the index the writer's catalogue names (under the write lock)."""
    try:
        view = view_for(store, in_use(cat, store), snap.work_ids)
    except FileNotFoundError:
        view = None
    return replace(snap, ann=view)


def forget_previous(cat: Catalogue) -> None:
    """In a commit's transaction: the replaced index's files may go now."""
    cat.set_meta(PREVIOUS_ANN, "")


def drop_in(cat: Catalogue, store: Store) -> None:
    """In a re-pin's transaction: no index in use (its codes are of the old
    vectors); its files stay for readers of the state before, as an install's."""
    old = in_use(cat, store)
    cat.set_meta(PREVIOUS_ANN, old.file if old is not None else "")
    cat.set_meta(ANN, "")


def remove_stale(w: Writer) -> None:
    """Deletes the files of indexes neither in use nor just replaced."""
    cat = w.catalogue
    info = in_use(cat, w.store)
    ann_io.remove_stale(w.folder, [info.file if info is not None else "", cat.get_meta(PREVIOUS_ANN) or ""])


def publish(w: Writer, info: AnnInfo | None) -> None:
    """Points readers at ``info`` (None: at none) in one commit that moves the
    revision, keeping the replaced index's files for readers of the state before."""
    with w.change() as cat:
        old = in_use(cat, w.store)
        cat.set_meta(PREVIOUS_ANN, old.file if old is not None and (info is None or old.file != info.file) else "")
        cat.set_meta(ANN, ann_io.encode(info))
    ann_io.write_copy(w.folder, info)
    remove_stale(w)


def refresh(w: Writer) -> AnnInfo | None:
    """Builds the approximate index the pinned type and the registry's size
    call for now, under the write lock (or drops it): for re-pins, whose old
    codes must never be searched again. Derived data, outside the catalogue
    until published: a kill here leaves the last index, or none."""
    snap = w.snapshot()
    kind = ann_io.resolve(w.pin.index_type, len(snap.work_ids))
    info = None
    if kind != ann_io.FLAT:
        info = ann_faiss.create(w.folder, np.asarray(snap.vectors), snap.work_ids, kind, w.generation)
        log.info("built a %s index of %d works (recall@10 %.3f)", kind, info.vectors, info.recall_at_10)
    publish(w, info)
    return info


def plan(w: Writer) -> AnnPlan | None:
    """At the end of a writer: what approximate index the registry now calls
    for, to be built once the lock is released; an index no longer wanted
    (flat pinned, or too few works) is dropped now."""
    snap = w.snapshot()
    try:
        kind = ann_io.resolve(w.pin.index_type, len(snap.work_ids))
        if not ann_io.needs_rebuild(snap.ann, w.pin.index_type, len(snap.work_ids)):
            return None
        if kind == ann_io.FLAT:
            refresh(w)
            return None
        current = in_use(w.catalogue, w.store)
        return AnnPlan(kind, snap, current.file if current is not None else None)
    except Exception as exc:  # noqa: BLE001 - derived data; the commits already landed
        log.warning("%s: approximate index not checked (%s: %s)", w.folder, type(exc).__name__, exc)
        return None


def install(w: Writer, plan_: AnnPlan, info: AnnInfo) -> bool:
    """Points readers at ``info``, built for ``plan_``, unless the index has
    moved on: re-pinned (the codes would be of old vectors), another index
    installed since, another kind now wanted, or the files gone."""
    current = in_use(w.catalogue, w.store)
    if (w.pin != plan_.snapshot.pin or (current.file if current is not None else None) != plan_.replaces
            or ann_io.resolve(w.pin.index_type, len(w.snapshot().work_ids)) != plan_.kind
            or not all(f.exists() for f in ann_io.files(w.folder, info.file))):
        return False
    publish(w, info)
    return True


def start(store: Store, plan_: AnnPlan) -> None:
    """Runs :func:`run` for ``plan_``: inline, or on a thread of its own."""
    if store.ann_in_background:
        threading.Thread(target=run, args=(store, plan_), name="mimicry-ann-build", daemon=True).start()
    else:
        run(store, plan_)


def run(store: Store, plan_: AnnPlan) -> AnnInfo | None:
    """Builds the index ``plan_`` asks for outside the write lock, then
    installs it under the lock (:func:`install`); returns what it installed
    last. Works added or removed during the build are searched exactly or
    masked like any since the last build; when they call for another build
    (the writers that made them found this one running and left it to it), it
    builds again, up to :data:`ROUNDS` times. Skipped when another build holds
    the build lock."""
    installed = None
    try:
        with ann_io.building(store.folder, wait_s=LOCK_WAIT_S) as mine:
            if not mine:
                log.info("%s: another build of the approximate index is running", store.folder)
                return None
            for _ in range(ROUNDS):
                snap = plan_.snapshot
                info = ann_faiss.create(store.folder, np.asarray(snap.vectors), snap.work_ids, plan_.kind,
                                        snap.generation)
                with store.writer(build=False) as w:
                    if not install(w, plan_, info):
                        log.info("%s: the index changed while its approximate index was built; "
                                 "the next writer builds again", store.folder)
                        return installed
                    log.info("built a %s index of %d works (recall@10 %.3f)", plan_.kind, info.vectors,
                             info.recall_at_10)
                    installed = info
                    plan_ = plan(w)  # type: ignore[assignment] # what landed meanwhile may call for another
                if plan_ is None:
                    break
            return installed
    except Exception as exc:  # noqa: BLE001 - derived data; the commits already landed
        log.warning("%s: approximate index not rebuilt (%s: %s); searching exactly beside the "
                    "last one until the next write", store.folder, type(exc).__name__, exc)
        return installed
