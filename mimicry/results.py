"""Typed results returned by the Python API; ``to_dict()`` is what every face prints.

Evidence is data: each piece names the work (id, artist, sha256) and its
similarity; the file path is there for local use, and ``to_dict(paths=False)``
leaves it out (a service never shows server paths).

The words faces print about a result live here too, so every face says the
same: :meth:`ScanResult.verdict_words` (one image's verdict), :func:`p_text`
(every p-value: never "0") and :func:`percent_text` (every rate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def _drop_paths(obj: Any) -> Any:
    """``obj`` (dicts and lists) without any ``path`` key."""
    if isinstance(obj, dict):
        return {k: _drop_paths(v) for k, v in obj.items() if k != "path"}
    if isinstance(obj, list):
        return [_drop_paths(v) for v in obj]
    return obj


#: What an image of an uncalibrated index gets instead of a verdict.
NOT_CALIBRATED = "not calibrated: similarities only"
#: The kinds of verdict an image gets (:meth:`ScanResult.verdict_words`).
ERROR, UNCALIBRATED, CANNOT_FLAG, FLAGGED, NOT_FLAGGED = (
    "error", "uncalibrated", "cannot-flag", "flagged", "not-flagged")


def _sig(v: float) -> str:
    return format(v, ".2g")


def _sentence(words: str) -> str:
    return words[:1].upper() + words[1:]


def p_text(p: float | None, n_null: int | None = None) -> str:
    """A p-value as text, never "0": two significant digits (``0.0044``,
    ``3.1e-07``); at the null's resolution floor ``1 / (n_null + 1)`` (no null
    image as high), ``< 0.0099 (1/101)``; an underflow to 0.0, ``< 1e-300``."""
    if p is None or p != p:
        return "n/a"
    if p <= 0:
        return "< 1e-300"
    if n_null and abs(p * (n_null + 1) - 1) < 1e-9:
        return f"< {_sig(1 / (n_null + 1))} (1/{n_null + 1})"
    return _sig(p)


def iso_utc(t: float | None) -> str | None:
    """Unix time ``t`` as UTC ISO 8601 to the second, ending in ``Z``
    (``2026-12-01T00:52:59Z``); None for None or 0 (unknown)."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def percent_text(rate: float | None) -> str:
    """A rate as a percentage, never "0.0%" for a rate above 0: ``1.0%``, ``0.05%``."""
    if rate is None or rate != rate:
        return "n/a"
    return f"{rate:.1%}" if rate >= 0.001 or rate == 0 else f"{_sig(rate * 100)}%"


def cannot_flag_text(promise: dict[str, Any]) -> str:
    """Why a calibration flags nothing: too few null images to reach its rate at all
    (:func:`mimicry.flagging.flaggable_size`)."""
    from mimicry.flagging import flaggable_size

    return (f"cannot flag: {promise['negatives']} {promise['source']} images, "
            f"needs at least {flaggable_size(promise['fpr'])}")


@dataclass(frozen=True)
class Skipped:
    """A file that could not be used, and why."""

    path: str
    reason: str


@dataclass
class IndexReport:
    """What one indexing run did. Counts are of works (images). ``rebuilt``:
    the index was re-embedded under a new recipe first."""

    embedded: int = 0
    unchanged: int = 0
    removed: int = 0
    artists: int = 0
    works: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    rebuilt: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Evidence:
    """One registered work near the query: which one, and its cosine similarity."""

    work_id: int
    artist: str
    sha256: str
    similarity: float
    path: str = ""

    def to_dict(self, paths: bool = True) -> dict[str, Any]:
        d = asdict(self)
        return d if paths else _drop_paths(d)


@dataclass(frozen=True)
class Match:
    """One registered artist's score for a query image.

    ``score`` is the cosine similarity of the query to the artist's nearest work
    (higher is closer, at most 1); ``evidence`` lists the artist's nearest works.
    On a calibrated index, ``normalised`` is the score in standard deviations
    above the artist's negatives; ``flagged`` says whether the image is flagged
    as this artist: the image-level rule (:mod:`mimicry.flagging`), true for at
    most one match, the image's raw-best artist, when its hubness-corrected
    score exceeds the image-level flag threshold (so ``flagged`` is true exactly
    when this match is the image's verdict ``artist``); and ``p_value`` is the
    share of the artist's negatives scoring at least as high (printed as ``fpr``
    too, its older name), which ranks evidence but decides no flag; otherwise
    all three are None.
    ``flag_at`` is the flag line on the raw scale: the similarity at which this
    image would be flagged as this artist, were the artist its nearest (the
    image-level threshold plus this image's and artist's hubness correction;
    None when uncalibrated or when the calibration cannot flag).
    """

    artist: str
    score: float
    evidence: list[Evidence]
    normalised: float | None = None
    flagged: bool | None = None
    p_value: float | None = None
    flag_at: float | None = None

    @property
    def fpr(self) -> float | None:
        """Alias of :attr:`p_value`."""
        return self.p_value

    def to_dict(self, paths: bool = True) -> dict[str, Any]:
        return {"artist": self.artist, "score": self.score,
                "evidence": [e.to_dict(paths) for e in self.evidence],
                "normalised": self.normalised, "flagged": self.flagged,
                "fpr": self.p_value, "p_value": self.p_value, "flag_at": self.flag_at}


@dataclass(frozen=True)
class ScanResult:
    """The scan of one image: ``matches`` best first, or ``error`` when the image
    could not be read (then ``matches`` is empty). ``artist`` is the verdict on a
    calibrated index: the image's best artist when its hubness-corrected score
    passes the image-level threshold, or None (not flagged; see
    :meth:`verdict_words` for why: not calibrated, cannot flag, or below the
    threshold). ``image_p_value``
    is the share of the calibration's null images (art by nobody registered)
    scoring at least as high; ``promise`` says what the flag rate rests on
    (``fpr``, ``negatives``, ``source``, ``certified``). ``sha256`` is of the
    image's bytes; ``warnings`` are plain sentences about the index state."""

    image: str
    matches: list[Match]
    error: str | None = None
    artist: str | None = None
    sha256: str | None = None
    warnings: list[str] = field(default_factory=list)
    image_p_value: float | None = None
    promise: dict[str, Any] | None = None
    vector: Any = field(default=None, repr=False, compare=False)  # the image's embedding (not in to_dict)

    def verdict_words(self) -> tuple[str, str]:
        """(kind, words): the verdict every face prints for this image. ``kind``
        is ``error``, ``uncalibrated`` (no calibration: no flags),
        ``cannot-flag`` (too few null images to flag at the rate),
        ``flagged`` or ``not-flagged``: never "no known artist" for an image
        that could not have been flagged."""
        p = self.promise
        if self.error:
            return ERROR, f"error: {self.error}"
        if p is None:
            return UNCALIBRATED, _sentence(NOT_CALIBRATED)
        if not p.get("can_flag", True):
            return CANNOT_FLAG, _sentence(cannot_flag_text(p))
        image_p = p_text(self.image_p_value, p.get("negatives"))
        if self.artist:
            return FLAGGED, f"FLAGGED: imitates {self.artist} (image p-value {image_p})"
        words = f"Not flagged at {percent_text(p.get('fpr'))}."
        if self.matches:
            best = self.matches[0]
            words += f" Nearest: {best.artist} (similarity {best.score:.3f}, image p-value {image_p})"
        return NOT_FLAGGED, words

    def to_dict(self, paths: bool = True) -> dict[str, Any]:
        return {"image": self.image, "matches": [m.to_dict(paths) for m in self.matches],
                "error": self.error, "artist": self.artist, "sha256": self.sha256,
                "image_p_value": self.image_p_value, "promise": self.promise,
                "warnings": list(self.warnings)}


@dataclass(frozen=True)
class SupportingSample:
    """One sample supporting an artist in a model verdict (with its image-level
    p-value), beside its nearest work of that artist."""

    sample: str
    p_value: float
    nearest: Evidence
    index: int = -1  # position in ``ModelVerdict.samples`` (names may repeat; positions don't)

    def to_dict(self, paths: bool = True) -> dict[str, Any]:
        return {"sample": self.sample, "index": self.index, "p_value": self.p_value,
                "nearest": self.nearest.to_dict(paths)}


@dataclass(frozen=True)
class ArtistFinding:
    """One artist's share of a model's samples."""

    artist: str
    flagged: int  # samples flagged as this artist
    p_value: float  # of the image-level test (Bonferroni over its levels)
    level: float  # the level (an image-level p-value bound per sample) of the strongest binomial test
    supporting: int  # samples at or below that level
    samples: list[str] = field(default_factory=list)  # supporting samples, strongest first (none: the top half by score)
    nearest_works: list[Evidence] = field(default_factory=list)  # the artist's works nearest to them
    pairs: list[SupportingSample] = field(default_factory=list)  # each supporting sample and its nearest work
    indices: list[int] = field(default_factory=list)  # positions of ``samples`` in ``ModelVerdict.samples``
    p_makers: float | None = None  # the maker test's top-half statistic (1 but for the set's best artist)
    p_images_makers: float | None = None  # the maker test's image statistic (the image test against makers)
    p_tiers: dict[str, float] = field(default_factory=dict)  # per tier ("imitates", "review"), its p-value
    tier: str | None = None  # the strongest tier the artist is at (None: neither)
    nearest_samples: int = 0  # samples whose nearest artist (raw score) this one is

    def to_dict(self, paths: bool = True) -> dict[str, Any]:
        return {"artist": self.artist, "tier": self.tier, "p_tiers": dict(self.p_tiers),
                "flagged": self.flagged, "p_value": self.p_value, "p_makers": self.p_makers,
                "p_images_makers": self.p_images_makers,
                "nearest_samples": self.nearest_samples,
                "level": self.level, "supporting": self.supporting, "samples": list(self.samples),
                "indices": list(self.indices),
                "nearest_works": [e.to_dict(paths) for e in self.nearest_works],
                "pairs": [p.to_dict(paths) for p in self.pairs]}


@dataclass(frozen=True)
class ModelVerdict:
    """Which registered artists a set of samples imitates (``artists``: the
    ``imitates`` tier, at ``alpha``) and which a person should review
    (``review``: at ``review_alpha`` only); ``tiers`` says what backs each
    (:class:`mimicry.model_test.Tier`)."""

    n_samples: int
    alpha: float
    artists: list[str]  # the verdict: artists imitated (empty: none)
    findings: list[ArtistFinding]  # artists at a tier or with any evidence, strongest first
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    promise: dict[str, Any] | None = None  # the calibration the test rests on
    samples: list[str] = field(default_factory=list)  # every sample judged, in input order
    inputs: list[int] = field(default_factory=list)  # each judged sample's position among the inputs given
    review: list[str] = field(default_factory=list)  # artists at the review tier only, strongest first
    review_alpha: float = 0.05
    tiers: dict[str, dict[str, Any]] = field(default_factory=dict)  # per tier: alpha, makers, resolvable, ...
    nearest: dict[str, int] = field(default_factory=dict)  # per artist, samples nearest to it (raw score)
    vectors: Any = field(default=None, repr=False, compare=False)  # the judged samples' embeddings (not in to_dict)

    @property
    def flagged(self) -> bool:
        """Whether any artist is at either tier (``scan-model`` exits 1)."""
        return bool(self.artists or self.review)

    def supported_by(self) -> dict[int, str]:
        """Each supporting sample's position in :attr:`samples` and the artist it
        supports (image test; a finding with no support supports no sample)."""
        return {i: f.artist for f in self.findings if f.supporting for i in f.indices}

    def to_dict(self, paths: bool = True) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "samples": list(self.samples), "inputs": list(self.inputs),
                "alpha": self.alpha, "artists": list(self.artists), "review_alpha": self.review_alpha,
                "review": list(self.review), "tiers": {k: dict(v) for k, v in self.tiers.items()},
                "nearest": dict(self.nearest),
                "findings": [f.to_dict(paths) for f in self.findings],
                "skipped": [asdict(s) for s in self.skipped], "promise": self.promise,
                "warnings": list(self.warnings)}


def runtimes_text(runtimes: dict[str, int], background: str | None) -> str:
    """What ran the model for an index's vectors, as ``mimicry info`` and every
    report's header say it: each runtime with its works, then the background's."""
    works = ", ".join(f"{name} ({n} works)" for name, n in sorted(runtimes.items())) or "no works"
    return works + (f"; background: {background}" if background else "")


@dataclass(frozen=True)
class IndexInfo:
    """What an index holds, which model and recipe it is pinned to, and the
    state of its calibration (``uncalibrated``, ``current`` or ``stale``)."""

    path: str
    backbone_id: str
    model_spec: str
    weights_sha256: str
    recipe: dict[str, Any]
    dim: int
    schema_version: int
    package_version: str
    artists: dict[str, int]
    works: int
    generation: int
    calibration: str
    fpr: float | None = None  # the calibration's target rate
    n_background: int = 0
    promise: dict[str, Any] | None = None  # what the image-level flag rate rests on
    warnings: list[str] = field(default_factory=list)
    calibrated_at: float | None = None  # when the calibration was made (Unix time; None: unknown)
    index: dict[str, Any] | None = None  # index type pinned, in use, and ``index_infos.json``
    #: what ran the model for the works' vectors (runtime -> works; "not recorded" before schema 4)
    runtimes: dict[str, int] = field(default_factory=dict)
    background_runtime: str | None = None  # what ran the model for the stored background

    def to_dict(self) -> dict[str, Any]:
        """``calibrated_at`` as UTC ISO 8601 (:func:`iso_utc`)."""
        return asdict(self) | {"calibrated_at": iso_utc(self.calibrated_at)}
