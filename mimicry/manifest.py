"""``manifest.json``: what model an index belongs to.

An index is pinned to its model: the backbone id, the sha256 of its weights and
the vector dimension. Opening an index with another model is an error
(:class:`IndexMismatchError`), never a silent mix of vector spaces.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SCHEMA_VERSION = 1
FILENAME = "manifest.json"


class IndexMismatchError(Exception):
    """The index was built with another model (or schema) than the one asked for."""


@dataclass(frozen=True)
class Manifest:
    """The model pin of one index folder."""

    backbone_id: str
    model_spec: str
    weights_sha256: str
    dim: int
    schema_version: int
    package_version: str
    created_at: float

    @staticmethod
    def new(backbone_id: str, model_spec: str, weights_sha256: str, dim: int) -> Manifest:
        from mimicry import __version__

        return Manifest(
            backbone_id, model_spec, weights_sha256, int(dim), SCHEMA_VERSION, __version__, time.time()
        )

    def check_model(self, backbone_id: str, weights_sha256: str, dim: int, where: Path) -> None:
        """Raises :class:`IndexMismatchError` unless the model is the one pinned."""
        if (backbone_id, weights_sha256, int(dim)) != (self.backbone_id, self.weights_sha256, self.dim):
            raise IndexMismatchError(
                f"{where}: index was built with {self.backbone_id} "
                f"(weights sha256 {self.weights_sha256[:12]}…, dim {self.dim}), "
                f"not {backbone_id} (weights sha256 {weights_sha256[:12]}…, dim {dim}). "
                f"Use the same model, or build a new index for this one."
            )


def read(folder: Path) -> Manifest:
    path = folder / FILENAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}: not a mimicry index (no {FILENAME})") from None
    except (OSError, ValueError) as exc:
        raise IndexMismatchError(f"{path}: unreadable manifest ({exc})") from None
    if data.get("schema_version") != SCHEMA_VERSION:
        raise IndexMismatchError(
            f"{path}: index schema version {data.get('schema_version')}, this mimicry "
            f"reads version {SCHEMA_VERSION}; rebuild the index"
        )
    return Manifest(**{k: data[k] for k in Manifest.__dataclass_fields__})


def write(folder: Path, manifest: Manifest) -> None:
    """Writes the manifest atomically (temporary file, fsync, rename)."""
    path = folder / FILENAME
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(asdict(manifest), fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
