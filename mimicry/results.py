"""Typed results returned by the Python API (and printed by the CLI as JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Skipped:
    """A file that could not be used, and why."""

    path: str
    reason: str


@dataclass
class IndexReport:
    """What one indexing run did. Counts are of works (images)."""

    embedded: int = 0
    unchanged: int = 0
    removed: int = 0
    artists: int = 0
    works: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Evidence:
    """One of the artist's works near the query, with its cosine similarity."""

    path: str
    similarity: float


@dataclass(frozen=True)
class Match:
    """One registered artist's score for a query image.

    ``score`` is the cosine similarity of the query to the artist's nearest work
    (higher is closer, at most 1); ``evidence`` lists the artist's nearest works.
    On a calibrated index, ``normalised`` is the score in standard deviations
    above the artist's negatives, ``flagged`` says whether it passes the artist's
    threshold, and ``fpr`` is the share of the artist's negatives scoring at
    least as high (a conservative estimate); otherwise all three are None.
    """

    artist: str
    score: float
    evidence: list[Evidence]
    normalised: float | None = None
    flagged: bool | None = None
    fpr: float | None = None


@dataclass(frozen=True)
class ScanResult:
    """The scan of one image: ``matches`` best first, or ``error`` when the image
    could not be read (then ``matches`` is empty). ``artist`` is the verdict on a
    calibrated index: the flagged artist with the lowest ``fpr``, or None when
    no registered artist passes its threshold."""

    image: str
    matches: list[Match]
    error: str | None = None
    artist: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
