"""What an index is, as ``mimicry info`` shows it (:class:`~mimicry.results.IndexInfo`)."""

from __future__ import annotations

from collections import Counter

from mimicry.flagging import calibration_of, calibration_state, state_warnings
from mimicry.results import IndexInfo
from mimicry.store import Snapshot, Store

#: How a work from before runtimes were recorded (schema 3) is counted.
NOT_RECORDED = "not recorded"


def describe(store: Store, snap: Snapshot) -> IndexInfo:
    """Pin, recipe, artists and works, calibration state, search, and the
    runtimes that made the works' and the background's vectors, of ``snap``."""
    pin, cal, ann = snap.pin, calibration_of(snap), snap.ann
    assert pin is not None
    runtimes, background_runtime = _runtimes(store, snap)
    return IndexInfo(
        str(store.folder), pin.backbone_id, pin.model_spec, pin.weights_sha256, dict(pin.recipe), pin.dim,
        pin.schema_version, pin.package_version, dict(snap.artist_counts), len(snap.work_ids),
        snap.generation, calibration_state(snap), None if cal is None else cal.target_rate,
        0 if cal is None else cal.n_background, None if cal is None else cal.promise(),
        state_warnings(snap), (cal.calibrated_at or None) if cal is not None else None,
        {"type": pin.index_type, "in_use": ann.info.type if ann is not None else "flat",
         "infos": ann.info.to_dict() if ann is not None else None},
        dict(runtimes), background_runtime)


def _runtimes(store: Store, snap: Snapshot) -> tuple[dict[str, int], str | None]:
    """(works per runtime, the background's runtime) of ``snap``: counted once per
    snapshot (kept in its memo; a write that changes either makes a new snapshot)."""
    if "runtimes" not in snap.memo:
        counts = Counter(snap.works[int(i)].runtime or NOT_RECORDED for i in snap.work_ids)
        background = store.read_meta("background_runtime") if snap.background is not None else None
        snap.memo["runtimes"] = (dict(counts), background)
    return snap.memo["runtimes"]
