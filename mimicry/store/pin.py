"""The pin: which model, weights and recipe an index belongs to.

An index is pinned to its backbone id, the sha256 of its weights, its recipe
(how pixels become vectors, :class:`~mimicry.backbones.Recipe`), the
vector dimension and a schema version. The authoritative copy is a row of the
catalogue, committed in the same transaction as the vectors it describes;
``manifest.json`` beside it is a readable copy, rewritten after every pin change.

Promises:
- Another model (backbone id, weights, dimension) is :class:`PinMismatchError`
  saying which model built the index: use that model or build a new index.
- The same model with another recipe is :class:`PinMismatchError` saying to
  re-index: ``mimicry index`` on the same folders rebuilds it (an older recipe
  version of the same model: :meth:`Pin.upgradable_to`).
- Only the current schema version is read. An older one is
  :class:`PinMismatchError` saying to re-index, unless
  :mod:`mimicry.store.migrations` has the steps to it (then the next writer
  upgrades it in place); a newer one says to upgrade mimicry.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mimicry.errors import CorruptIndexError, PinMismatchError

#: The format this mimicry reads and writes: 3, the baseline (vectors in
#: segments, :mod:`mimicry.store.segments`). Later versions come with their
#: step in :data:`mimicry.store.migrations.STEPS`.
SCHEMA_VERSION = 4
FILENAME = "manifest.json"

REINDEX = "re-index it: `mimicry index PORTFOLIOS --index {folder}` rebuilds it from its works"


@dataclass(frozen=True)
class Pin:
    """What one index folder is pinned to."""

    backbone_id: str
    model_spec: str  # what the user typed for --model; the embedder is rebuilt from it
    weights_sha256: str
    dim: int
    recipe: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    package_version: str = ""
    created_at: float = 0.0
    index_type: str = "flat"  # flat | ivf | hnsw | auto (:mod:`mimicry.store.ann`); older indexes: flat

    @staticmethod
    def for_embedder(embedder: Any, model_spec: str, index_type: str = "auto") -> Pin:
        """The pin of a new index built with ``embedder`` (named ``model_spec``)."""
        from mimicry import __version__

        return Pin(embedder.backbone_id, model_spec, embedder.weights_sha256, int(embedder.dim),
                   embedder.recipe.to_dict(), SCHEMA_VERSION, __version__, time.time(), index_type)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str, where: Path) -> Pin:
        try:
            data = json.loads(text)
            return Pin(**{k: data[k] for k in Pin.__dataclass_fields__ if k in data})
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptIndexError(f"{where}: unreadable pin ({exc})") from None

    @property
    def current(self) -> bool:
        """Whether this mimicry reads the index as it is (its schema version)."""
        return self.schema_version == SCHEMA_VERSION

    def same_model(self, embedder: Any) -> bool:
        return (self.backbone_id, self.weights_sha256, self.dim) == (
            embedder.backbone_id, embedder.weights_sha256, int(embedder.dim))

    def upgradable_to(self, embedder: Any) -> bool:
        """Whether rebuilding with ``embedder`` moves this index forward: the same
        model, the current schema, and an older recipe version (never a newer
        one, so two installed releases do not rebuild each other's index)."""
        return (self.same_model(embedder) and self.current
                and int(self.recipe.get("version", 0)) < embedder.recipe.version)

    def check_current(self, folder: Path) -> None:
        """Raises :class:`PinMismatchError` (re-index) unless :attr:`current`."""
        if self.current:
            return
        from mimicry.store import migrations

        if self.schema_version > SCHEMA_VERSION:
            raise PinMismatchError(
                f"{folder}: index schema version {self.schema_version} was written by a newer "
                f"mimicry (this one reads {SCHEMA_VERSION}); upgrade mimicry to use it")
        if migrations.steps(self.schema_version, SCHEMA_VERSION) is not None:
            raise PinMismatchError(
                f"{folder}: index schema version {self.schema_version} is older than this "
                f"mimicry's ({SCHEMA_VERSION}); the next write (`mimicry index`) upgrades it in place")
        raise PinMismatchError(
            f"{folder}: index schema version {self.schema_version} was written by an older "
            f"mimicry, which this one does not read (schema {SCHEMA_VERSION}); "
            + REINDEX.format(folder=folder))

    def check(self, embedder: Any, folder: Path) -> None:
        """Raises :class:`PinMismatchError` unless ``embedder`` is the pinned
        model with the pinned recipe (see the module docstring for the two messages)."""
        if not self.same_model(embedder):
            raise PinMismatchError(
                f"{folder}: index was built with {self.backbone_id} "
                f"(weights sha256 {self.weights_sha256[:12]}…, dim {self.dim}), "
                f"not {embedder.backbone_id} (weights sha256 {embedder.weights_sha256[:12]}…, "
                f"dim {embedder.dim}). Use the same model, or build a new index for this one.")
        self.check_current(folder)
        theirs = embedder.recipe.to_dict()
        if theirs != self.recipe:
            moved = sorted(k for k in set(theirs) | set(self.recipe) if theirs.get(k) != self.recipe.get(k))
            raise PinMismatchError(
                f"{folder}: index was built with {self.backbone_id} recipe "
                f"v{self.recipe.get('version')}, this model embeds with recipe v{theirs.get('version')} "
                f"(differs in {', '.join(moved)}): its vectors would not be comparable; "
                + REINDEX.format(folder=folder))


def write_file(folder: Path, pin: Pin) -> None:
    """Writes ``manifest.json`` atomically (temporary file, fsync, rename)."""
    path = folder / FILENAME
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(pin.to_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
