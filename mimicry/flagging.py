"""The image-flag rule, in one place: which artist, if any, one image is flagged as.

How a flag is decided: the image's best artist is the one with the highest raw
score (the first evidence shown); its *statistic* is that artist's
hubness-corrected score (:func:`scan_statistic`, :func:`mimicry.scoring.correct`). The
image is flagged as that artist when the statistic exceeds the calibration's
``flag_threshold`` (:func:`flag_threshold`), set on the *null images* so that
at most ``floor(A (n + 1)) - 1`` of the ``n`` lie above it: for a new image
exchangeable with them, the chance of a flag is at most ``A``.

The null images' statistics (:func:`null_statistic`) are computed by the very
function a scan is judged on (:func:`scan_statistic`), chunk by chunk: a null
image scanned as a query, with the same reference neighbourhood ``r(q)``, gets
exactly its null statistic. The threshold and the statistic cannot drift apart.

An image's ``image_p_value`` (:func:`image_p_values`) is the share of the null
images whose statistic is at least its own, ``(k + 1) / (n + 1)``: a conformal
p-value for "this image is by nobody registered", whatever the registry's size.
:func:`flag_at` puts the threshold back on the raw scale, the line a report
draws on the score bar: an image passes it exactly when it is flagged.

The rule's parameters are a :class:`Calibration`, fitted by
:mod:`mimicry.calibration` and stored in the index as plain arrays; a
snapshot's is read by :func:`calibration_of`.

Words used everywhere inside the package (docs, "Verdicts"): ``target_rate``
(the user's ``--fpr``, per *image*, whatever the number of artists; ``fpr`` is
its alias on :class:`Calibration`); a match's ``p_value`` (the share of that
artist's negatives scoring at least as high, printed as ``p``: it ranks
evidence, it is not the promise); ``image_p_value`` (above).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mimicry import scoring
from mimicry.results import iso_utc
from mimicry.scoring import artist_max_chunks

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.maker_test import MakerNull
    from mimicry.store.snapshot import Snapshot

__all__ = ["Calibration", "Judged", "calibration_of", "calibration_state", "certified_size", "flag_at",
           "flag_threshold", "flaggable_size", "flagged", "image_p_values", "image_statistic", "image_verdicts",
           "judge", "null_statistic", "scan_statistic", "state_warnings", "with_calibration"]

#: Calibration states a snapshot reports (:func:`calibration_state`).
UNCALIBRATED, CURRENT, STALE = "uncalibrated", "current", "stale"

#: Where the null images came from.
BACKGROUND, PORTFOLIO = "background", "portfolio"


def certified_size(target_rate: float) -> int:
    """Null images needed to certify ``target_rate``: ``ceil(3 / A)``."""
    return math.ceil(3 / target_rate - 1e-9)


def flaggable_size(target_rate: float) -> int:
    """The fewest null images :func:`flag_threshold` can flag with at ``target_rate``,
    ``floor(A (n + 1)) >= 1`` as it decides it: 99 for 1%, 19 for 5%."""
    n = max(0, math.floor(1 / target_rate) - 3)
    while not math.isfinite(flag_threshold(np.zeros(n), target_rate)):
        n += 1
    return n


@dataclass(frozen=True, repr=False)
class Calibration:
    """Per-artist negatives and normalisation, and the image-level flag threshold.

    ``generation`` is the index generation it was computed on; an index whose
    vectors moved on since reports it as stale until recalibrated.
    """

    artists: list[str]
    mu: np.ndarray  # per artist: mean corrected score of its negatives
    sigma: np.ndarray  # per artist: their spread
    negatives: list[np.ndarray]  # per artist, sorted corrected negative scores
    artist_r: np.ndarray  # per artist: hubness neighbourhood r(a)
    null: np.ndarray  # sorted image statistics of the null images
    flag_threshold: float  # flag when the image statistic exceeds this
    target_rate: float
    generation: int
    n_background: int
    null_source: str = PORTFOLIO  # "background" or "portfolio"
    k: int = scoring.HUBNESS_K
    weight: float = scoring.HUBNESS_WEIGHT
    calibrated_at: float = 0.0  # Unix time it was computed (0: unknown, an older index)
    maker_sizes: np.ndarray | None = None  # the background's makers (:attr:`makers`)
    maker_stats: np.ndarray | None = None

    @property
    def fpr(self) -> float:
        """Alias of :attr:`target_rate` (the name of the ``--fpr`` flag)."""
        return self.target_rate

    @property
    def makers(self) -> MakerNull | None:
        """The null of the maker test (:mod:`mimicry.maker_test`); None without a background."""
        from mimicry.maker_test import MakerNull

        return None if self.maker_sizes is None else MakerNull(self.maker_sizes, self.maker_stats)

    @property
    def n_null(self) -> int:
        return len(self.null)

    def __repr__(self) -> str:  # short: the arrays hold thousands of floats
        return (f"Calibration({len(self.artists)} artists, rate {self.target_rate:g}, null {self.n_null} "
                f"{self.null_source}, makers {0 if self.maker_sizes is None else len(self.maker_sizes)})")

    @property
    def certified(self) -> bool:
        """Whether the promise is backed by enough background images (``ceil(3 / A)``; docs, "Verdicts")."""
        return self.null_source == BACKGROUND and self.n_null >= certified_size(self.target_rate)

    @property
    def can_flag(self) -> bool:
        """False when there are too few null images (under :func:`flaggable_size`) to flag at ``A`` at all."""
        return bool(np.isfinite(self.flag_threshold))

    def promise(self) -> dict[str, Any]:
        """What every result carries about the image-level promise."""
        return {"fpr": self.target_rate, "negatives": self.n_null, "source": self.null_source,
                "certified": self.certified, "needed": certified_size(self.target_rate),
                "can_flag": self.can_flag}

    # -- storage: plain arrays only (no pickle) ----------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        lengths = np.array([len(n) for n in self.negatives], dtype=np.int64)
        flat = np.concatenate(self.negatives) if self.negatives else np.zeros(0, np.float32)
        return {
            "artists": np.array(self.artists, dtype=np.str_),
            "mu": self.mu, "sigma": self.sigma, "artist_r": self.artist_r,
            "lengths": lengths, "negatives": flat.astype(np.float32), "null": self.null,
            "source": np.array([self.null_source], dtype=np.str_),
            "meta": np.array([self.target_rate, self.generation, self.n_background, self.flag_threshold,
                              self.k, self.weight, self.calibrated_at], dtype=np.float64),
        } | ({} if self.maker_sizes is None else {"maker_sizes": self.maker_sizes, "maker_stats": self.maker_stats})

    @staticmethod
    def from_arrays(z: dict[str, np.ndarray]) -> Calibration:
        bounds = np.cumsum(np.r_[0, z["lengths"]])
        negs = [z["negatives"][bounds[i]:bounds[i + 1]] for i in range(len(z["lengths"]))]
        meta = z["meta"].tolist()
        rate, gen, n_bg, thr, k, weight, at = (meta + [0.0])[:7]  # 0.0: stored before the time was kept
        return Calibration([str(a) for a in z["artists"]], z["mu"], z["sigma"], negs, z["artist_r"],
                           z["null"], float(thr), float(rate), int(gen), int(n_bg), str(z["source"][0]),
                           int(k), float(weight), float(at), z.get("maker_sizes"), z.get("maker_stats"))

    def to_dict(self) -> dict[str, Any]:
        """What ``mimicry calibrate --json`` prints."""
        return {
            "fpr": self.target_rate, "n_background": self.n_background, "generation": self.generation,
            "calibrated_at": iso_utc(self.calibrated_at), "flag_threshold": self.flag_threshold,
            "promise": self.promise(), "makers": 0 if self.makers is None else self.makers.makers,
            "hubness": {"k": self.k, "weight": self.weight},
            "artists": {a: {"mean": float(m), "std": float(sd), "negatives": len(n), "hubness": float(r)}
                        for a, m, sd, n, r in zip(self.artists, self.mu, self.sigma, self.negatives,
                                                  self.artist_r)},
        }

    # -- use ------------------------------------------------------------------------
    def columns_for(self, artists: Sequence[str]) -> np.ndarray:
        """For each name in ``artists``, its column here (-1 when not calibrated)."""
        pos = {a: j for j, a in enumerate(self.artists)}
        return np.array([pos.get(a, -1) for a in artists], dtype=np.int64)

    def select(self, columns: np.ndarray) -> Calibration:
        """The calibration of the artists at ``columns`` only, in that order."""
        if len(columns) == len(self.artists) and np.array_equal(columns, np.arange(len(self.artists))):
            return self
        from dataclasses import replace

        return replace(self, artists=[self.artists[j] for j in columns], mu=self.mu[columns],
                       sigma=self.sigma[columns], negatives=[self.negatives[j] for j in columns],
                       artist_r=self.artist_r[columns])

    def normalise(self, corrected: np.ndarray) -> np.ndarray:
        """Corrected scores to standard deviations above each artist's negatives."""
        return (corrected - self.mu[None, :]) / self.sigma[None, :]

    def p_value(self, artist: int, corrected: float) -> float:
        """The share of the negatives of the artist at column ``artist`` scoring
        at least ``corrected`` (a hubness-corrected score), ``(k + 1) / (n + 1)``."""
        neg = self.negatives[artist]
        k = len(neg) - int(np.searchsorted(neg, corrected, side="left"))
        return (k + 1) / (len(neg) + 1)


# -- the statistic -------------------------------------------------------------------
def image_statistic(raw: np.ndarray, corrected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, best artist) per image: the raw-best artist and its corrected score."""
    best = raw.argmax(axis=1)
    return corrected[np.arange(len(raw)), best], best


def scan_statistic(raw: np.ndarray, query_r: np.ndarray, artist_r: np.ndarray, weight: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corrected scores, statistic, best artist) of images from their raw
    ``(n, n_artists)`` scores, their reference neighbourhoods ``r(q)`` and the
    artists' ``r(a)``: what every scanned and every null image is judged on."""
    corrected = scoring.correct(raw, query_r, artist_r, weight)
    statistic, best = image_statistic(raw, corrected)
    return corrected, statistic, best


def null_statistic(queries: np.ndarray, works: np.ndarray, columns: Sequence[np.ndarray],
                   query_r: np.ndarray, artist_r: np.ndarray, weight: float,
                   exclude: np.ndarray | None = None) -> np.ndarray:
    """:func:`scan_statistic` of each of ``queries`` (the null images, in their
    order) against every artist's works, scored exactly in chunks so memory
    never holds a query x artist matrix; ``exclude[i]``: an artist query ``i``
    is never scored for (its own, when the null images are the portfolio)."""
    out = np.empty(len(queries), dtype=np.float32)
    for rows, raw in artist_max_chunks(queries, works, columns):
        if exclude is not None:
            raw[np.arange(len(raw)), exclude[rows]] = -np.inf
        out[rows] = scan_statistic(raw, query_r[rows], artist_r, weight)[1]
    return out


# -- the threshold and what it says --------------------------------------------------
def flag_threshold(null: np.ndarray, target_rate: float) -> float:
    """The statistic a new image must exceed: at most ``floor(A (n + 1)) - 1`` of
    the ``n`` sorted null statistics lie above it, so a new exchangeable image is
    flagged with probability at most ``A``. With fewer than ``1/A - 1`` null
    images no threshold keeps that promise, and nothing is flagged (infinity)."""
    rank = int(math.floor(target_rate * (len(null) + 1) + 1e-9))
    if rank < 1:
        return float("inf")
    return float(null[len(null) - rank])


def flagged(cal: Calibration, statistic: np.ndarray) -> np.ndarray:
    """Whether each image statistic passes the calibration's flag threshold."""
    return statistic > cal.flag_threshold


def image_p_values(cal: Calibration, statistic: np.ndarray) -> np.ndarray:
    """The share of null images whose statistic is at least each one's, ``(k + 1) / (n + 1)``."""
    k = len(cal.null) - np.searchsorted(cal.null, statistic, side="left")
    return (k + 1) / (len(cal.null) + 1)


def flag_at(cal: Calibration, raw: np.ndarray, corrected: np.ndarray) -> np.ndarray:
    """The flag threshold on the raw scale, per image and artist: the raw score
    at which the image would be flagged as that artist, were the artist its
    best (``corrected = raw - correction``, so a statistic passes the threshold
    where the raw score passes threshold + correction). Infinite when the
    calibration cannot flag; NaN for an artist left unscored (raw -inf)."""
    with np.errstate(invalid="ignore"):
        return cal.flag_threshold + (raw - corrected)


# -- judging images ------------------------------------------------------------------
@dataclass(frozen=True)
class Judged:
    """Images judged against a calibration (columns: the calibration's artists).

    ``statistic`` and ``best`` are :func:`scan_statistic`'s; ``image_p`` the
    image-level p-values; ``flagged`` whether the image passes the flag
    threshold (then it is flagged as ``best``)."""

    raw: np.ndarray
    corrected: np.ndarray
    statistic: np.ndarray
    best: np.ndarray
    image_p: np.ndarray
    flagged: np.ndarray

    def subset(self, rows: np.ndarray) -> Judged:
        """The judgement of the images at ``rows`` only."""
        return Judged(self.raw[rows], self.corrected[rows], self.statistic[rows], self.best[rows],
                      self.image_p[rows], self.flagged[rows])


def judge(raw: np.ndarray, query_r: np.ndarray, cal: Calibration) -> Judged:
    """Judges images from their raw ``(n, n_artists)`` scores and their
    reference neighbourhoods ``r(q)`` (:func:`mimicry.scoring.neighbourhood`)."""
    corrected, statistic, best = scan_statistic(raw, query_r, cal.artist_r, cal.weight)
    return Judged(raw, corrected, statistic, best, image_p_values(cal, statistic), flagged(cal, statistic))


def image_verdicts(judged: Judged) -> np.ndarray:
    """Each image's verdict as an artist index, or -1 when it is not flagged."""
    return np.where(judged.flagged, judged.best, -1)


# -- a snapshot's calibration: storage keeps arrays, the domain reads them -----------
def calibration_of(snapshot: Snapshot, strict: bool = True) -> Calibration | None:
    """The calibration stored in ``snapshot`` (None when it was never
    calibrated), parsed once per snapshot. Stored arrays that are not a
    calibration are :class:`~mimicry.errors.CorruptIndexError`, or, with
    ``strict`` off (a writer about to rewrite them), None."""
    from mimicry.errors import CorruptIndexError

    memo = snapshot.memo
    if "calibration" in memo:
        return memo["calibration"]
    arrays = snapshot.stored_calibration
    if arrays is None:
        cal = None
    else:
        try:
            cal = Calibration.from_arrays(dict(arrays))
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            if not strict:
                return None
            where = snapshot.folder if snapshot.folder is not None else "index"
            raise CorruptIndexError(f"{where}: stored 'calibration' is malformed ({exc}); "
                                    f"redo it (`mimicry calibrate`)") from None
    memo["calibration"] = cal
    return cal


def with_calibration(snapshot: Snapshot, cal: Calibration | None) -> Snapshot:
    """``snapshot`` with ``cal`` as its calibration (for in-memory use: evaluation)."""
    from dataclasses import replace

    return replace(snapshot, stored_calibration=None if cal is None else cal.to_arrays(),
                   memo={"calibration": cal})


def calibration_state(snapshot: Snapshot, strict: bool = True) -> str:
    """``uncalibrated``, ``current`` (calibrated on exactly these vectors), or
    ``stale`` (the portfolio changed since; ``calibrate`` or the next write
    refreshes it)."""
    cal = calibration_of(snapshot, strict)
    if cal is None:
        return UNCALIBRATED
    if cal.generation != snapshot.generation or tuple(cal.artists) != snapshot.artists:
        return STALE
    return CURRENT


def state_warnings(snapshot: Snapshot) -> list[str]:
    """Plain sentences about ``snapshot``'s calibration that every result should carry."""
    if calibration_state(snapshot) == STALE:
        return ["calibration is stale: the portfolio changed since it was computed; "
                "flags use the old thresholds (run `mimicry calibrate` to refresh)"]
    return []
