"""Format changes of an index, one numbered step each.

The schema version the pin records (:data:`mimicry.store.pin.SCHEMA_VERSION`)
names the format of everything in the folder. Schema 3 is the baseline: this
mimicry reads it as it is. A later change of format bumps
:data:`~mimicry.store.pin.SCHEMA_VERSION` and adds its :class:`Step` to
:data:`STEPS`: a function of the catalogue that takes an index from schema N
to N + 1 (rows, meta; files it needs are written complete before it returns,
as a commit's segments are).

Promises:
- Steps run only under the write lock, when a writer opens an index of an
  older schema (:func:`upgrade`), all of them in one transaction that also
  moves the pin's ``schema_version``: a kill or a failing step leaves the
  index as it was, at its old schema, and nothing half-migrated is ever read.
- An index older than the baseline, or one with a step missing on the way,
  is never changed; opening it is :class:`~mimicry.errors.PinMismatchError`
  saying to re-index (:meth:`~mimicry.store.pin.Pin.check_current`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from mimicry.store import pin as pin_io
from mimicry.store.catalogue import Catalogue

log = logging.getLogger(__name__)

#: The first schema this mimicry reads without a step.
BASELINE = 3


@dataclass(frozen=True)
class Step:
    """Takes an index from schema ``from_schema`` to ``from_schema + 1``: ``run``
    changes the catalogue inside the caller's transaction."""

    from_schema: int
    run: Callable[[Catalogue], None]
    what: str


def _works_runtime(cat: Catalogue) -> None:
    cat.db.execute("ALTER TABLE works ADD COLUMN runtime TEXT")


#: Every format change since :data:`BASELINE`, in order.
STEPS: list[Step] = [
    Step(3, _works_runtime, "each work records the runtime that made its vector"),
]


def steps(from_schema: int, to_schema: int) -> list[Step] | None:
    """The steps from ``from_schema`` to ``to_schema``, in order; None when
    there is no way (older than the baseline, or a step missing)."""
    if from_schema < BASELINE or from_schema > to_schema:
        return None
    by_schema = {s.from_schema: s for s in STEPS}
    out = [by_schema.get(n) for n in range(from_schema, to_schema)]
    return None if any(s is None for s in out) else out  # type: ignore[return-value]


def upgrade(cat: Catalogue, folder: Path) -> bool:
    """Under the write lock: brings an index of an older schema to
    :data:`~mimicry.store.pin.SCHEMA_VERSION` through its steps, in one
    transaction with the pin's new ``schema_version`` and a new revision;
    whether it did. Does nothing for a current or newer index, or one without
    a way (its readers get the re-index error)."""
    text = cat.get_meta("pin")  # the writer holds the lock: nobody else moves it meanwhile
    pin = pin_io.Pin.from_json(text, folder) if text is not None else None
    todo = steps(pin.schema_version, pin_io.SCHEMA_VERSION) if pin is not None else None
    if not todo:
        return False
    cat.begin()
    try:
        for step in todo:
            log.warning("%s: upgrading the index from schema %d (%s)", folder, step.from_schema, step.what)
            step.run(cat)
        cat.set_meta("pin", replace(pin, schema_version=pin_io.SCHEMA_VERSION).to_json())
        cat.bump_revision()
        cat.commit()
    except BaseException:
        cat.rollback()
        raise
    return True
