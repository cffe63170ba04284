"""A case's evidence, as the report shows it: the case, the scan behind it
(the recorded verdict with its nearest works), and each recorded image with
its preview; and the same for the artist a case is about, without what
identifies the upload.

Promises: :func:`for_artist` leaves no hub id (``key``, ``upload_id``,
``model_id``, ``uploader``, request id, scan id), no uploaded file's name
(each image is named by its position: ``image 1``, ``sample 1``) or sha256,
and no moderator's name or note; the verdict's numbers, the tiers, the artists and
the registered works named as evidence are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimicry.errors import NotFoundError
from mimicry.moderation.cases import Case, get_case
from mimicry.moderation.db import ModerationDB
from mimicry.moderation.history import PREVIEWS


@dataclass
class RecordedImage:
    """One image of the scan: its position, name, sha256, tier (an upload's
    own; a model sample's ``supports`` or ``sample``), the artist it is flagged
    as or supports, and its preview's file name (None: none was kept)."""

    position: int
    name: str
    sha256: str
    tier: str
    artist: str | None
    preview: str | None


@dataclass
class CaseEvidence:
    """A case with the scan behind it: when, which kind (``image`` or
    ``model``), the hub's ids, its tier, the recorded result (what ``mimicry
    scan --json`` or ``scan-model --json`` printed, without paths) and its images."""

    case: Case
    scan_id: int
    at: float
    kind: str
    upload_id: str | None
    model_id: str | None
    uploader: str | None
    request_id: str | None
    tier: str
    result: dict[str, Any]
    images: list[RecordedImage] = field(default_factory=list)

    def preview_path(self, folder: Path, position: int) -> Path | None:
        """Where image ``position``'s preview is kept in index folder ``folder`` (None: none)."""
        for img in self.images:
            if img.position == position and img.preview is not None:
                return folder / PREVIEWS / img.preview
        return None


def case_evidence(mdb: ModerationDB, case_id: int) -> CaseEvidence:
    """The evidence of case ``case_id`` (:class:`~mimicry.errors.NotFoundError`
    when there is none): its latest scan, recorded result and images."""
    case = get_case(mdb, case_id)
    rows = mdb.read("SELECT id, at, kind, upload_id, model_id, uploader, request_id, tier, result "
                    "FROM scans WHERE id=?", (case.scan_id,))
    if not rows:  # purged between the two reads (a case goes with its scan)
        raise NotFoundError(f"no case {case_id}")
    row = rows[0]
    images = [RecordedImage(*r) for r in mdb.read(
        "SELECT position, name, sha256, tier, artist, preview FROM scan_images WHERE scan_id=? ORDER BY position",
        (case.scan_id,))]
    return CaseEvidence(case, *row[:8], json.loads(row[8]), images)


def _labels(result: dict[str, Any], kind: str) -> None:
    """Names every image of a recorded ``result`` by its position, in place."""
    if kind == "image":
        for i, r in enumerate(result.get("results", [])):
            r["image"], r["sha256"] = f"image {i + 1}", None
        return
    label = [f"sample {i + 1}" for i in range(len(result.get("samples", [])))]
    result["samples"] = label
    for f in result.get("findings", []):
        f["samples"] = [label[i] for i in f.get("indices", []) if 0 <= i < len(label)]
        for p in f.get("pairs", []):
            p["sample"] = label[p["index"]] if 0 <= p.get("index", -1) < len(label) else "sample"
    for k, s in enumerate(result.get("skipped", [])):
        s["path"] = f"skipped {k + 1}"


def for_artist(ev: CaseEvidence) -> CaseEvidence:
    """``ev`` as the artist it is about may read it (module docstring): a copy."""
    result = json.loads(json.dumps(ev.result))
    _labels(result, ev.kind)
    word = "image" if ev.kind == "image" else "sample"
    images = [RecordedImage(i.position, f"{word} {i.position + 1}", "", i.tier, i.artist, i.preview)
              for i in ev.images]
    c = ev.case
    case = Case(c.id, c.kind, "", c.state, c.tier, c.artist, list(c.artists), 0, c.source, c.opened_at,
                c.updated_at, [type(d)(d.at, "", d.decision, "") for d in c.decisions])
    return CaseEvidence(case, 0, ev.at, ev.kind, None, None, None, None, ev.tier, result, images)
