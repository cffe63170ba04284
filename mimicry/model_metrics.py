"""Model-level metrics of an evaluation, judged by the rule ``scan-model``
runs (:func:`mimicry.model_test.judge_set`): sets of samples of each model a
manifest names (its ``model`` column), and each held-out maker of the
background as one set (what a model of a style nobody registered looks like)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mimicry.maker_test import MIN_MAKER_WORKS
from mimicry.model_test import judge_set

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.flagging import Calibration, Judged

__all__ = ["MODEL_SET_SIZES", "maker_metrics", "model_metrics"]

#: Set sizes drawn from each model's samples (without replacement).
MODEL_SET_SIZES = (8, 16, 32)


def model_metrics(j: Judged, cal: Calibration, models: np.ndarray, truth: np.ndarray, seed: int, sets: int,
                  alpha: float, review_alpha: float) -> dict[str, dict[str, Any]]:
    """Per model (rows of ``j`` sharing a non-empty ``models`` value): its
    ``pool`` of samples, the ``artist`` it imitates (``truth``; None for a
    model imitating nobody) and, per size of :data:`MODEL_SET_SIZES`, ``sets``
    sets drawn without replacement with the share judged ``imitates`` and
    ``imitates_or_review`` (as that artist; any artist for a model imitating
    nobody). A size larger than the pool is listed in ``skipped_sizes``."""
    rng = np.random.default_rng(seed)
    col = {a: k for k, a in enumerate(cal.artists)}
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(models.tolist()) - {""}):
        pool = np.flatnonzero(models == name)
        names = sorted(set(truth[pool].tolist()) - {""})
        target = col.get(names[0]) if len(names) == 1 else None
        entry: dict[str, Any] = {"pool": len(pool), "artist": names[0] if target is not None else None,
                                 "skipped_sizes": []}
        for n in MODEL_SET_SIZES:
            if n > len(pool):
                entry["skipped_sizes"].append(n)
                continue
            imitates = either = 0
            for _ in range(sets):
                sj = judge_set(j.subset(rng.choice(pool, n, replace=False)), cal, alpha, review_alpha)
                hit = _hit(sj.imitates, target)
                imitates += hit
                either += hit or _hit(sj.review, target)
            entry[str(n)] = {"sets": sets, "imitates": imitates / sets, "imitates_or_review": either / sets}
        out[name] = entry
    return out


def maker_metrics(held: Judged, groups: np.ndarray, cal: Calibration, alpha: float, review_alpha: float
                  ) -> dict[str, Any]:
    """Each held-out maker (a group of at least :data:`MIN_MAKER_WORKS` of
    ``held``'s rows) judged as one set: how many ``sets``, and the share with
    any artist at the ``imitates`` tier and at either tier (``review``)."""
    ids, counts = np.unique(groups, return_counts=True)
    sets = [np.flatnonzero(groups == g) for g in ids[counts >= MIN_MAKER_WORKS]]
    if not sets:
        return {"sets": 0, "imitates": None, "review": None}
    judged = [judge_set(held.subset(rows), cal, alpha, review_alpha) for rows in sets]
    imitates = sum(len(sj.imitates) > 0 for sj in judged)
    either = sum(len(sj.imitates) + len(sj.review) > 0 for sj in judged)
    return {"sets": len(sets), "imitates": imitates / len(sets), "review": either / len(sets)}


def _hit(artists: np.ndarray, target: int | None) -> bool:
    """Whether a tier's artists name ``target`` (any artist when it is None)."""
    return bool(len(artists)) if target is None else bool(target in artists)
