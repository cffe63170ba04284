"""The evaluation's metrics, measured on images judged exactly as a scan
judges them (:func:`mimicry.scanning.judge_aligned`), and model verdicts by
the rule ``scan-model`` applies (:func:`mimicry.model_test.imitated`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from mimicry.flagging import Judged, image_verdicts
from mimicry.model_test import IMITATES, judge_set, set_statistic
from mimicry.results import Evidence
from mimicry.scoring import nearest

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.flagging import Calibration
    from mimicry.store.snapshot import Snapshot

__all__ = ["METRIC_KEYS", "SET_SIZES", "UNREGISTERED_KEYS", "Miss", "scan_metrics", "set_metrics",
           "tpr_at_fpr", "worst_misses"]

#: Set sizes of the model-level test; keys for 16 and 32 carry a suffix.
SET_SIZES = (8, 16, 32)
#: Misses kept for the report, and works shown beside each.
N_MISSES, MISS_EVIDENCE = 10, 2
METRIC_KEYS = ("top1", "top3", "auc", "tpr_at_1pct_fpr", "tpr_at_fpr", "negatives_flagged",
               "imitations_flagged", "background_flagged", "set_auc", "imitation_sets_detected",
               "negative_sets_flagged", "set_auc_16", "imitation_sets_detected_16", "negative_sets_flagged_16",
               "set_auc_32", "imitation_sets_detected_32", "negative_sets_flagged_32",
               "imitation_sets_either_tier", "negative_sets_either_tier", "imitation_sets_either_tier_16",
               "negative_sets_either_tier_16", "imitation_sets_either_tier_32", "negative_sets_either_tier_32")
UNREGISTERED_KEYS = ("auc_unregistered", "tpr_at_1pct_fpr_unregistered")
NAN = float("nan")


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, max_false_positive_rate: float = 0.01) -> float:
    """True-positive rate at the best threshold whose false-positive rate (the
    ROC axis) is at most ``max_false_positive_rate`` (no interpolation past it)."""
    false_pos, true_pos, _ = roc_curve(labels, scores)
    ok = false_pos <= max_false_positive_rate + 1e-12
    return float(true_pos[ok].max()) if ok.any() else 0.0


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, NaN unless both classes are present."""
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else NAN


def scan_metrics(j: Judged, cal: Calibration, roles: np.ndarray, truth: np.ndarray, seed: int,
                 held: Judged | None, sets: int = 200, *, alpha: float, fpr: float, review_alpha: float = 0.05
                 ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The metrics of one scan of the queries (:data:`METRIC_KEYS`, and
    :data:`UNREGISTERED_KEYS` when a role is ``unregistered``), and the
    detection statistics behind the ROC. ``tpr_at_fpr`` is the TPR at ``fpr``
    (the calibrated rate), ``tpr_at_1pct_fpr`` at 1% whatever it is; model
    verdicts on sets are taken at ``alpha``; ``held``: held-out background."""
    imi = roles == "imitation"
    neg = roles != "imitation"
    res = _attribution(j, np.asarray(cal.artists), imi, truth)
    # Detection uses the image statistic: the raw-best artist's hubness-corrected score.
    stat = j.statistic
    labels = np.r_[np.ones(imi.sum()), np.zeros(neg.sum())]
    s = np.r_[stat[imi], stat[neg]]
    both = bool(neg.any() and imi.any())
    res["auc"] = auc(labels, s)
    res["tpr_at_1pct_fpr"] = tpr_at_fpr(labels, s) if both else NAN
    res["tpr_at_fpr"] = tpr_at_fpr(labels, s, fpr) if both else NAN
    res.update(_flag_rates(j, np.asarray(cal.artists), imi, neg, truth, held))
    for size in SET_SIZES:
        suffix = "" if size == SET_SIZES[0] else f"_{size}"
        res.update({k + suffix: v for k, v in
                    set_metrics(j, cal, imi, neg, truth, seed, n_sets=sets, set_size=size, alpha=alpha,
                                review_alpha=review_alpha).items()})
    hard = roles == "unregistered"
    if hard.any():
        labels = np.r_[np.ones(imi.sum()), np.zeros(hard.sum())]
        s = np.r_[stat[imi], stat[hard]]
        res["auc_unregistered"] = auc(labels, s)
        res["tpr_at_1pct_fpr_unregistered"] = tpr_at_fpr(labels, s)
    return res, {"imitation": stat[imi].tolist(), "negative": stat[neg].tolist()}


def _attribution(j: Judged, names: np.ndarray, imi: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``top1`` and ``top3`` of the imitations, ranked by raw score (top-1
    measured best that way, docs, "Accuracy")."""
    if not imi.any():
        return {"top1": NAN, "top3": NAN}
    order = np.argsort(-j.raw, axis=1)
    return {"top1": float(np.mean(names[order[imi, 0]] == truth[imi])),
            "top3": float(np.mean([t in names[o[:3]] for t, o in zip(truth[imi], order[imi])]))}


def _flag_rates(j: Judged, names: np.ndarray, imi: np.ndarray, neg: np.ndarray, truth: np.ndarray,
                held: Judged | None) -> dict[str, float]:
    """Shares flagged: negatives (as anyone), imitations (as their artist), held-out background."""
    verdicts = image_verdicts(j)
    flagged_as = np.where(verdicts >= 0, names[np.maximum(verdicts, 0)], "")
    return {"negatives_flagged": float((verdicts[neg] >= 0).mean()) if neg.any() else NAN,
            "imitations_flagged": float(np.mean(flagged_as[imi] == truth[imi])) if imi.any() else NAN,
            "background_flagged": float(held.flagged.mean()) if held is not None else NAN}


def set_metrics(j: Judged, cal: Calibration, imi: np.ndarray, neg: np.ndarray, truth: np.ndarray,
                seed: int, n_sets: int = 200, set_size: int = 8, *, alpha: float, review_alpha: float = 0.05
                ) -> dict[str, float]:
    """The model verdict that ships (:func:`mimicry.model_test.judge_set`, its
    ``imitates`` tier) on sets of ``set_size`` drawn with replacement from
    one artist's imitations (the artist chosen at random) and from the
    negatives: ``set_auc`` (AUC of its statistic), ``imitation_sets_detected``
    (share of imitation sets whose verdict at ``alpha`` names their artist),
    ``negative_sets_flagged`` (share of negative sets with any verdict), and
    the same two at either tier (``imitates`` or ``review``): ``*_either_tier``."""
    names = ("set_auc", "imitation_sets_detected", "negative_sets_flagged", "imitation_sets_either_tier",
             "negative_sets_either_tier")
    if not imi.any() or not neg.any():
        return dict.fromkeys(names, NAN)
    rng = np.random.default_rng(seed)
    imi_idx = np.flatnonzero(imi)
    by_artist = {a: imi_idx[truth[imi_idx] == a] for a in np.unique(truth[imi_idx])}
    keys = sorted(by_artist)
    neg_idx = np.flatnonzero(neg)
    col = {a: k for k, a in enumerate(cal.artists)}
    pos, negs, detected, false_flags, either, false_either = [], [], 0, 0, 0, 0
    for _ in range(n_sets):
        artist = keys[rng.integers(len(keys))]
        sample = j.subset(rng.choice(by_artist[artist], set_size))
        sj = judge_set(sample, cal, alpha, review_alpha)
        pos.append(set_statistic(sample, cal, sj.p_tiers[IMITATES]))
        detected += col[artist] in sj.imitates
        either += col[artist] in sj.imitates or col[artist] in sj.review
        sample = j.subset(rng.choice(neg_idx, set_size))
        sj = judge_set(sample, cal, alpha, review_alpha)
        negs.append(set_statistic(sample, cal, sj.p_tiers[IMITATES]))
        false_flags += len(sj.imitates) > 0
        false_either += len(sj.imitates) + len(sj.review) > 0
    return dict(zip(names, (auc(np.r_[np.ones(n_sets), np.zeros(n_sets)], np.r_[pos, negs]), detected / n_sets,
                           false_flags / n_sets, either / n_sets, false_either / n_sets)))


@dataclass(frozen=True)
class Miss:
    """One scanned image the verdict got wrong: an imitation not flagged as its
    artist, or a negative flagged. ``nearest``: the works of its nearest
    (raw-best) artist nearest to it."""

    path: str
    role: str  # "imitation" or "negative" (unregistered art counts as negative)
    truth: str  # the artist imitated ("" for a negative)
    best_artist: str
    statistic: float
    flagged_as: str | None
    nearest: list[Evidence]


def worst_misses(snapshot: Snapshot, j: Judged, qvecs: np.ndarray, roles: np.ndarray,
                 truth: np.ndarray, paths: Sequence[Path], n: int = N_MISSES) -> list[Miss]:
    """The ``n`` imitations not flagged as their artist with the lowest
    statistic and negatives flagged with the highest, worst (furthest on the
    wrong side of the other kind) first: interleaved by rank within each kind."""
    names = np.asarray(snapshot.artists)
    verdicts = image_verdicts(j)
    flagged_as = np.where(verdicts >= 0, names[np.maximum(verdicts, 0)], "")
    imi = roles == "imitation"
    missed = np.flatnonzero(imi & (flagged_as != truth))
    missed = missed[np.argsort(j.statistic[missed], kind="stable")]
    false = np.flatnonzero(~imi & (verdicts >= 0))
    false = false[np.argsort(-j.statistic[false], kind="stable")]
    order: list[int] = []
    for a, b in zip(list(missed[:n]) + [None] * n, list(false[:n]) + [None] * n):
        order += [int(x) for x in (b, a) if x is not None]
    out = []
    for i in order[:n]:
        best = int(j.best[i])
        out.append(Miss(str(paths[i]), "imitation" if imi[i] else "negative", str(truth[i]) if imi[i] else "",
                        str(names[best]), float(j.statistic[i]), str(flagged_as[i]) or None,
                        nearest(snapshot, qvecs[i], best, MISS_EVIDENCE)))
    return out
