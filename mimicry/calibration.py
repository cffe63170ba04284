"""Calibration: an image-level false-flag rate that holds as the registry grows.

Words used here and everywhere inside the package:

- ``target_rate``: what calibration promises (the user's ``--fpr``; ``fpr`` stays
  an alias of it on :class:`Calibration`): of images by nobody registered, at
  most about this share is flagged as anyone. The promise is per *image*, so it
  does not grow with the number of registered artists.
- ``p_value`` of a match: for one image and one artist, the share of that
  artist's negatives scoring at least as high, ``(k + 1) / (n + 1)``. Results
  print it as ``fpr`` too, the name users know. It ranks evidence; it is not
  the image-level promise.
- ``image_p_value``: the share of the null images (below) whose image
  statistic is at least the image's, ``(k + 1) / (n + 1)``: a conformal p-value
  for "this image is by nobody registered", whatever the registry's size.

How a flag is decided lives in :mod:`mimicry.flagging`; this module only
fits what it rests on: the artists' hubness neighbourhoods ``r(a)``, per-artist
negatives (to normalise scores and rank evidence), and the sorted image
statistics of the *null images* (:func:`mimicry.flagging.null_statistic`, the
function scans are judged on) with the flag threshold set on them
(:func:`mimicry.flagging.flag_threshold`).

The null images are the background (``calibrate --background``: art by
nobody registered, a hub's ordinary uploads), each scored with its own group
(its folder, or itself) left out of its reference neighbours. Without a
background they are the portfolio's own works, each scored against the other
artists only (leave-one-artist-out), and the promise is *not certified*; it is
certified with at least ``ceil(3 / A)`` background images (300 for 1%): with
``1 / A`` the realised rate exceeds ``A`` about a third of the time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mimicry import flagging, hubness
from mimicry.scoring import artist_max, columns_of
from mimicry.settings import check_rate

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.store.snapshot import Snapshot

__all__ = ["Calibration", "calibrate", "calibrate_snapshot", "calibration_of", "calibration_state",
           "certified_size", "state_warnings", "with_calibration"]

#: Calibration states a snapshot reports (:func:`calibration_state`).
UNCALIBRATED, CURRENT, STALE = "uncalibrated", "current", "stale"

#: Where the null images came from.
BACKGROUND, PORTFOLIO = "background", "portfolio"


def certified_size(target_rate: float) -> int:
    """Null images needed to certify ``target_rate``: ``ceil(3 / A)``."""
    return math.ceil(3 / target_rate - 1e-9)


@dataclass(frozen=True)
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
    k: int = hubness.DEFAULT_K
    weight: float = hubness.DEFAULT_WEIGHT
    calibrated_at: float = 0.0  # Unix time it was computed (0: unknown, an older index)

    @property
    def fpr(self) -> float:
        """Alias of :attr:`target_rate` (the name of the ``--fpr`` flag)."""
        return self.target_rate

    @property
    def n_null(self) -> int:
        return len(self.null)

    @property
    def certified(self) -> bool:
        """Whether the promise is backed by enough background images (``ceil(3 / A)``).
        The rate is ``A`` on average over calibrations either way; with that many the
        realised rate exceeds ``2A`` in about 6% of calibrations at 300 images (0.5%
        at 1,000), where with ``1/A`` it does in 13%."""
        return self.null_source == BACKGROUND and self.n_null >= certified_size(self.target_rate)

    @property
    def can_flag(self) -> bool:
        """False when there are too few null images (under ``1/A - 1``) to flag at ``A`` at all."""
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
        }

    @staticmethod
    def from_arrays(z: dict[str, np.ndarray]) -> Calibration:
        bounds = np.cumsum(np.r_[0, z["lengths"]])
        negs = [z["negatives"][bounds[i]:bounds[i + 1]] for i in range(len(z["lengths"]))]
        meta = z["meta"].tolist()
        rate, gen, n_bg, thr, k, weight = meta[:6]
        at = meta[6] if len(meta) > 6 else 0.0  # stored before the time was kept
        return Calibration([str(a) for a in z["artists"]], z["mu"], z["sigma"], negs, z["artist_r"],
                           z["null"], float(thr), float(rate), int(gen), int(n_bg), str(z["source"][0]),
                           int(k), float(weight), float(at))

    def to_dict(self) -> dict[str, Any]:
        """What ``mimicry calibrate --json`` prints."""
        return {
            "fpr": self.target_rate, "n_background": self.n_background, "generation": self.generation,
            "calibrated_at": self.calibrated_at or None,
            "flag_threshold": self.flag_threshold, "promise": self.promise(),
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


#: Per-artist negatives are drawn from at most this many rows (other artists'
#: works and background images, one seeded sample shared by every artist):
#: enough for p-values down to 2e-4 and a stable mean and spread, while the
#: calibration of a 100k-work registry costs ``O(sample x works)``, not
#: ``O(works^2)``. Registries whose works and background together are smaller
#: use them all. The flag threshold never uses this sample: it rests on every
#: null image.
NEGATIVE_SAMPLE = 5000
NEGATIVE_SEED = 0


def calibrate(
    work_vecs: np.ndarray, work_artists: Sequence[str], background: np.ndarray | None = None,
    target_rate: float = 0.01, generation: int = 0, background_groups: np.ndarray | None = None,
    k: int = hubness.DEFAULT_K, weight: float = hubness.DEFAULT_WEIGHT,
    negative_sample: int = NEGATIVE_SAMPLE,
) -> Calibration:
    """Builds a :class:`Calibration` at ``target_rate`` (InputError outside (0, 1)).

    ``background``: art by nobody registered, the reference population of the
    hubness correction and the null images of the image-level threshold;
    ``background_groups`` labels its rows (an artist, a folder), so that a
    background image's neighbours leave its own group out (default: itself).
    Time is linear in the works (``negative_sample`` and the background
    against every work; without a background, each work's best other artist
    is quadratic in time but not in memory); memory never holds a works x
    works matrix.
    """
    check_rate("fpr", target_rate)
    work_vecs = np.asarray(work_vecs, dtype=np.float32)
    names, own = np.unique(np.asarray(work_artists, dtype=str), return_inverse=True)
    artists = [str(a) for a in names]
    own = own.astype(np.int64).reshape(-1)
    cols = columns_of(own, len(artists))
    bg = None if background is None or not len(background) else np.asarray(background, np.float32)
    groups = (np.arange(len(bg)) if background_groups is None else np.asarray(background_groups)) \
        if bg is not None else None
    ref_k = k if bg is not None else 0

    work_r = hubness.neighbourhood(work_vecs, bg, ref_k)
    counts = np.bincount(own, minlength=len(artists))
    artist_r = (np.bincount(own, weights=work_r, minlength=len(artists)) / np.maximum(counts, 1)).astype(np.float32)
    bg_r = hubness.neighbourhood(bg, bg, ref_k, groups, groups) if bg is not None else np.zeros(0, np.float32)
    negs = _negatives(work_vecs, own, cols, work_r, bg, bg_r, artist_r, weight, negative_sample)
    mu = np.array([n.mean() if len(n) else 0.0 for n in negs], dtype=np.float32)
    sigma = np.array([max(float(n.std()), 1e-3) if len(n) > 1 else 1.0 for n in negs], dtype=np.float32)

    if bg is not None:  # the background, each image with its own group left out of r(q)
        null = flagging.null_statistic(bg, work_vecs, cols, bg_r, artist_r, weight)
        source = BACKGROUND
    else:  # each work against the other artists only
        null = flagging.null_statistic(work_vecs, work_vecs, cols, work_r, artist_r, weight, exclude=own)
        source = PORTFOLIO
    null = np.sort(null).astype(np.float32)
    return Calibration(artists, mu, sigma, negs, artist_r, null, flagging.flag_threshold(null, target_rate),
                       target_rate, generation, 0 if bg is None else len(bg), source, ref_k, weight,
                       time.time())


def _negatives(work_vecs: np.ndarray, own: np.ndarray, cols: list[np.ndarray], work_r: np.ndarray,
               bg: np.ndarray | None, bg_r: np.ndarray, artist_r: np.ndarray, weight: float,
               negative_sample: int) -> list[np.ndarray]:
    """Per artist, the sorted corrected scores of one seeded sample of works
    and background rows (:data:`NEGATIVE_SAMPLE`), the artist's own works left out."""
    n_bg = 0 if bg is None else len(bg)
    pool = len(work_vecs) + n_bg
    rows = np.arange(pool) if pool <= negative_sample else \
        np.sort(np.random.default_rng(NEGATIVE_SEED).choice(pool, negative_sample, replace=False))
    from_works = rows < len(work_vecs)
    w_rows, b_rows = rows[from_works], rows[~from_works] - len(work_vecs)
    sample = np.concatenate([work_vecs[w_rows], bg[b_rows] if bg is not None else np.zeros((0, work_vecs.shape[1]), np.float32)])
    sample_r = np.concatenate([work_r[w_rows], bg_r[b_rows] if bg is not None else np.zeros(0, np.float32)])
    sample_own = np.concatenate([own[w_rows], np.full(len(b_rows), -1)])
    corr_s = hubness.correct(artist_max(sample, work_vecs, cols), sample_r, artist_r, weight)
    return [np.sort(corr_s[sample_own != j, j]).astype(np.float32) for j in range(len(cols))]


def calibrate_snapshot(snapshot: Snapshot, target_rate: float) -> Calibration:
    """The calibration of a snapshot's portfolio against its stored background
    (what ``calibrate``, every recalibrating write and ``evaluate`` all run)."""
    from mimicry.errors import InputError

    if len(snapshot.artists) < 2:
        raise InputError(f"{snapshot.folder or 'portfolio'}: calibration needs at least two artists")
    return calibrate(snapshot.vectors, snapshot.row_artist_names, snapshot.background,
                     target_rate=target_rate, generation=snapshot.generation,
                     background_groups=snapshot.background_groups)


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
