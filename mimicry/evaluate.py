"""Evaluation on a labelled set, measured through the same functions a scan uses.

A labelled set is a CSV with columns ``path, role, artist`` (role: genuine,
imitation, negative; other columns ignored; paths relative to the CSV's
folder or absolute); the CLI calls it the manifest. Genuine rows are the
portfolio; the rest are scanned. An imitation of an artist with no portfolio
is art no registered artist made: it counts as a negative.

The portfolio becomes an in-memory :class:`~mimicry.store.Snapshot`, calibrated
by :func:`mimicry.calibration.calibrate_snapshot`; queries are scored by
:func:`mimicry.scoring.score`, image verdicts come from
:func:`mimicry.verdict.image_verdicts` and model verdicts from
:func:`mimicry.verdict.artist_tests` with the :func:`mimicry.verdict.imitated`
rule: exactly what ``scan`` and ``scan-model`` run.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from mimicry.backbones import DEFAULT_MODEL, Embedder, load_embedder
from mimicry.calibration import Calibration, calibrate_snapshot, with_calibration
from mimicry.embedding import Embedded, embed_images
from mimicry.engines.local import LocalEngine
from mimicry.errors import ImageError, InputError
from mimicry.images import expand_inputs, load_image
from mimicry.portfolio import background_groups
from mimicry.results import Evidence, Skipped
from mimicry.scoring import nearest, score
from mimicry.store.snapshot import Snapshot
from mimicry.verdict import (
    Judged,
    artist_tests,
    image_verdicts,
    imitated,
    judge,
    query_neighbourhood,
    set_statistic,
)
from mimicry.vector_cache import embed_cached

#: Set sizes of the model-level test; keys for 16 and 32 carry a suffix.
SET_SIZES = (8, 16, 32)
#: Misses kept for the report, and works shown beside each.
N_MISSES, MISS_EVIDENCE = 10, 2
METRIC_KEYS = ("top1", "top3", "auc", "tpr_at_1pct_fpr", "negatives_flagged", "imitations_flagged",
               "background_flagged", "set_auc", "imitation_sets_detected", "negative_sets_flagged",
               "set_auc_16", "imitation_sets_detected_16", "negative_sets_flagged_16",
               "set_auc_32", "imitation_sets_detected_32", "negative_sets_flagged_32")
UNREGISTERED_KEYS = ("auc_unregistered", "tpr_at_1pct_fpr_unregistered")


@dataclass(frozen=True)
class LabelledRow:
    """One row of a labelled set."""

    path: Path
    role: str
    artist: str


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


@dataclass
class Evaluation:
    """What ``mimicry evaluate`` measured. ``metrics`` holds :data:`METRIC_KEYS`
    (and :data:`UNREGISTERED_KEYS` with ``--unregistered``); ``perturbations``
    the same per perturbation; ``scores`` the best artist score of each
    imitation and negative (for the ROC plot; not in :meth:`to_dict`)."""

    metrics: dict[str, float]
    n_genuine: int
    n_imitation: int
    n_negative: int
    skipped: list[Skipped]
    unregistered_artists: list[str]
    fpr_target: float
    perturbations: dict[str, dict[str, float]] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)
    promise: dict[str, Any] | None = None  # what the image-level flag rate rests on
    threshold: float | None = None  # the image-level flag threshold (None: cannot flag)
    misses: list[Miss] = field(default_factory=list)  # the worst misses, worst first (:data:`N_MISSES`)

    def to_dict(self) -> dict[str, Any]:
        """The flat object ``--json`` prints and ``metrics.json`` holds (a metric
        that cannot be measured here, such as ``background_flagged`` without a
        background, is null)."""
        return {**_nulls(self.metrics), "n_genuine": self.n_genuine, "n_imitation": self.n_imitation,
                "n_negative": self.n_negative, "n_skipped": len(self.skipped),
                "skipped": [asdict(s) for s in self.skipped],
                "unregistered_artists": list(self.unregistered_artists),
                "fpr_target": self.fpr_target, "promise": self.promise,
                "perturbations": {k: _nulls(v) for k, v in self.perturbations.items()}}

    def table(self) -> list[tuple[str, float, dict[str, float]]]:
        """Rows (metric, clean value, value under each perturbation) for display."""
        keys = list(METRIC_KEYS) + [k for k in UNREGISTERED_KEYS if k in self.metrics]
        return [(k, self.metrics[k], {p: m.get(k, float("nan")) for p, m in self.perturbations.items()})
                for k in keys]


def _nulls(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN (not measurable) as None, so the JSON is valid everywhere."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}


def read_labelled(path: str | Path) -> list[LabelledRow]:
    """Rows of a ``path, role, artist`` CSV, paths made absolute."""
    path = Path(path)
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not {"path", "role"} <= set(reader.fieldnames or []):
                raise InputError(f"{path}: manifest needs path, role and artist columns")
            for line, r in enumerate(reader, start=2):
                if not (r.get("path") or "").strip() or not (r.get("role") or "").strip():
                    raise InputError(f"{path}:{line}: row lacks a path or a role")
                p = Path(r["path"].strip())
                rows.append(LabelledRow(p if p.is_absolute() else (path.parent / p).resolve(),
                                        r["role"].strip(), (r.get("artist") or "").strip()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc})") from None
    return rows


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, max_false_positive_rate: float = 0.01) -> float:
    """True-positive rate at the best threshold whose false-positive rate (the
    ROC axis) is at most ``max_false_positive_rate`` (no interpolation past it)."""
    false_pos, true_pos, _ = roc_curve(labels, scores)
    ok = false_pos <= max_false_positive_rate + 1e-12
    return float(true_pos[ok].max()) if ok.any() else 0.0


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


# -- perturbations that launder an image --------------------------------------
def _jpeg40(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=40)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _half(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.resize((max(1, w // 2), max(1, h // 2)), Image.BICUBIC).resize((w, h), Image.BICUBIC)


def _noise(img: Image.Image) -> Image.Image:
    rng = np.random.default_rng(0)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = np.clip(arr + rng.normal(0, 0.03, arr.shape), 0, 1)
    return Image.fromarray((arr * 255).round().astype(np.uint8))


def _crop80(img: Image.Image) -> Image.Image:
    w, h = img.size
    dw, dh = round(w * 0.1), round(h * 0.1)
    return img.crop((dw, dh, w - dw, h - dh))


def _flip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.FLIP_LEFT_RIGHT)


PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg40": _jpeg40, "downscale_half": _half, "noise_0.03": _noise,
    "crop80": _crop80, "hflip": _flip,
}


# -- the harness ---------------------------------------------------------------
def _embed_perturbed(embedder: Embedder, paths: list[Path], fn) -> dict:
    """Vectors of ``fn(image)``, decoded exactly as the clean scan decodes, so
    the identity perturbation reproduces the clean vectors."""
    imgs, ok = [], []
    for p in paths:
        try:
            imgs.append(fn(load_image(p, draft_size=embedder.recipe.draft_size)))
            ok.append(p)
        except ImageError:
            continue
    return dict(zip(ok, embed_images(embedder, imgs)))


def choose_unregistered(rows: list[LabelledRow], n: int, seed: int) -> set[str]:
    """``n`` artists, among those with genuine works and imitations, chosen by ``seed``."""
    with_imi = {r.artist for r in rows if r.role == "imitation"}
    with_gen = {r.artist for r in rows if r.role == "genuine"}
    pool = sorted(with_imi & with_gen)
    if n > len(pool):
        raise InputError(f"--unregistered {n}: only {len(pool)} artists have both works and imitations")
    rng = np.random.default_rng(seed)
    return set(rng.choice(pool, size=n, replace=False).tolist()) if n else set()


def split_background(paths: list[Path], groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (calibration, held out): half the groups each, chosen by
    ``seed``, so no group (maker, as :func:`~mimicry.portfolio.background_groups`
    tells them apart) is on both sides."""
    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    rng.shuffle(ids)
    held = np.isin(groups, ids[len(ids) // 2:])
    return ~held, held


def evaluate(
    manifest: str | Path,
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    unregistered: int = 0,
    seed: int = 0,
    perturb: bool = False,
    fpr: float = 0.01,
    batch_size: int = 32,
    out: str | Path | None = None,
    embedder: Embedder | None = None,
    background: Sequence[str | Path] | None = None,
    heldout_background: Sequence[str | Path] | None = None,
    cache: str | Path | None = None,
    sets: int = 200,
    command: str = "",
) -> Evaluation:
    """Runs the evaluation of a labelled set (see README, "Accuracy").

    ``background``: folders of art by nobody registered, the calibration's
    reference population; without ``heldout_background`` it is split in half
    by sub-folder (artist), seeded, and the other half is held out to measure
    ``background_flagged``. ``cache``: a folder for :mod:`mimicry.vector_cache`
    (None: embed everything). ``sets``: sets of each size drawn for the
    model-level metrics. With ``out``, writes ``metrics.json``, ``roc.png`` and
    ``report.html`` (headed by ``command``, the command that made it).
    """
    rows = read_labelled(manifest)
    embedder = embedder or load_embedder(model, device)
    unreg = choose_unregistered(rows, unregistered, seed)

    def embed(paths: list[Path]) -> tuple[list[Path], np.ndarray, list[ImageError]]:
        if cache is not None:
            got = embed_cached(embedder, paths, Path(cache), batch_size)
        else:
            got = Embedded.gather(LocalEngine(embedder).embed(paths, batch_size=batch_size), embedder.dim)
        return got.keys, got.vectors, got.errors

    ok, embedded, errors = embed(sorted({r.path for r in rows}))
    vecs = dict(zip(ok, embedded))
    skipped = [Skipped(e.path, e.reason) for e in errors]

    bg_cal = bg_held = groups = None
    if heldout_background and not background:
        raise InputError("--heldout-background needs --background (the images to calibrate with)")
    if background:
        bg_paths = [Path(p) for p in expand_inputs(background)]
        bg_ok, bg_vecs, bg_err = embed(bg_paths)
        skipped += [Skipped(e.path, e.reason) for e in bg_err]
        groups = background_groups(bg_ok, list(background))
        if heldout_background:
            bg_cal = bg_vecs
            held_ok, bg_held, held_err = embed([Path(p) for p in expand_inputs(heldout_background)])
            skipped += [Skipped(e.path, e.reason) for e in held_err]
        else:
            keep, held = split_background(bg_ok, groups, seed)
            bg_cal, bg_held, groups = bg_vecs[keep], bg_vecs[held], groups[keep]
        if not len(bg_cal):
            raise InputError("no readable background images in " + ", ".join(map(str, background)))

    portfolio = [r for r in rows if r.role == "genuine" and r.artist not in unreg and r.path in vecs]
    if len({r.artist for r in portfolio}) < 2:
        raise InputError(f"{manifest}: evaluation needs genuine works of at least two artists")
    snapshot = Snapshot.from_labelled(np.stack([vecs[r.path] for r in portfolio]),
                                      [r.artist for r in portfolio], [str(r.path) for r in portfolio],
                                      background=bg_cal, background_groups=groups)
    cal = calibrate_snapshot(snapshot, fpr)
    snapshot = with_calibration(snapshot, cal)
    artists = snapshot.artists

    def role(r: LabelledRow) -> str | None:
        if r.role == "imitation" and r.artist in artists:
            return "imitation"
        if r.role == "negative" or (r.role == "imitation" and r.artist not in artists):
            return "unregistered" if r.artist in unreg else "negative"
        if r.role == "genuine" and r.artist in unreg:
            return "unregistered"
        return None

    queries = [(r, role(r)) for r in rows if role(r) is not None and r.path in vecs]
    if not queries:
        raise InputError(f"{manifest}: no readable imitation or negative rows to scan")
    q_paths = [r.path for r, _ in queries]
    roles = np.array([k for _, k in queries])
    truth = np.array([r.artist for r, _ in queries])

    def judged(qvecs: np.ndarray) -> Judged:
        return judge(score(snapshot, qvecs).raw, query_neighbourhood(snapshot, cal, qvecs), cal)

    held = judged(bg_held) if bg_held is not None and len(bg_held) else None

    def metrics_for(qvecs: np.ndarray) -> tuple[dict, dict]:
        return _metrics(judged(qvecs), cal, roles, truth, seed, held, sets)

    qvecs = np.stack([vecs[p] for p in q_paths])
    clean = judged(qvecs)
    metrics, scores = _metrics(clean, cal, roles, truth, seed, held, sets)
    result = Evaluation(metrics, len(portfolio), int((roles == "imitation").sum()),
                        int((roles != "imitation").sum()), skipped, sorted(unreg), fpr, {}, scores,
                        cal.promise(), cal.flag_threshold if cal.can_flag else None,
                        worst_misses(snapshot, clean, qvecs, roles, truth, q_paths))
    if perturb:
        for name, fn in PERTURBATIONS.items():
            pv = _embed_perturbed(embedder, q_paths, fn)
            m, _ = metrics_for(np.stack([pv.get(p, vecs[p]) for p in q_paths]))
            result.perturbations[name] = m
    if out is not None:
        write_outputs(result, out, command)
    return result


def _metrics(j: Judged, cal: Calibration, roles: np.ndarray, truth: np.ndarray, seed: int,
             held: Judged | None, sets: int = 200) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The metrics of one scan of the queries, and the detection statistics behind the ROC."""
    names = np.asarray(cal.artists)
    nan = float("nan")
    # Ranking uses the raw score (top-1 measured best that way, README "Accuracy");
    # detection uses the image statistic: the raw-best artist's hubness-corrected score.
    imi = roles == "imitation"
    neg = roles != "imitation"
    order = np.argsort(-j.raw, axis=1)
    res: dict = {}
    res["top1"] = float(np.mean(names[order[imi, 0]] == truth[imi])) if imi.any() else nan
    res["top3"] = (float(np.mean([t in names[o[:3]] for t, o in zip(truth[imi], order[imi])]))
                   if imi.any() else nan)
    stat = j.statistic
    labels = np.r_[np.ones(imi.sum()), np.zeros(neg.sum())]
    s = np.r_[stat[imi], stat[neg]]
    res["auc"] = _auc(labels, s)
    res["tpr_at_1pct_fpr"] = tpr_at_fpr(labels, s) if neg.any() and imi.any() else nan
    verdicts = image_verdicts(j)
    res["negatives_flagged"] = float((verdicts[neg] >= 0).mean()) if neg.any() else nan
    flagged_as = np.where(verdicts >= 0, names[np.maximum(verdicts, 0)], "")
    res["imitations_flagged"] = float(np.mean(flagged_as[imi] == truth[imi])) if imi.any() else nan
    res["background_flagged"] = float(held.flagged.mean()) if held is not None else nan
    for size in SET_SIZES:
        suffix = "" if size == SET_SIZES[0] else f"_{size}"
        res.update({k + suffix: v for k, v in
                    _set_metrics(j, cal, imi, neg, truth, seed, n_sets=sets, set_size=size).items()})
    hard = roles == "unregistered"
    if hard.any():
        labels = np.r_[np.ones(imi.sum()), np.zeros(hard.sum())]
        s = np.r_[stat[imi], stat[hard]]
        res["auc_unregistered"] = _auc(labels, s)
        res["tpr_at_1pct_fpr_unregistered"] = tpr_at_fpr(labels, s)
    return res, {"imitation": stat[imi].tolist(), "negative": stat[neg].tolist()}


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
    order = order[:n]
    if not order:
        return []
    out = []
    for i in order:
        best = int(j.best[i])
        out.append(Miss(str(paths[i]), "imitation" if imi[i] else "negative", str(truth[i]) if imi[i] else "",
                        str(names[best]), float(j.statistic[i]), str(flagged_as[i]) or None,
                        nearest(snapshot, qvecs[i], best, MISS_EVIDENCE)))
    return out


def _subset(j: Judged, rows: np.ndarray) -> Judged:
    return Judged(j.raw[rows], j.corrected[rows], j.statistic[rows], j.best[rows], j.image_p[rows],
                  j.flagged[rows])


def _set_metrics(j: Judged, cal: Calibration, imi: np.ndarray, neg: np.ndarray,
                 truth: np.ndarray, seed: int, n_sets: int = 200, set_size: int = 8,
                 alpha: float = 0.001) -> dict:
    """The model-level test on sets of ``set_size`` drawn with replacement from
    one artist's imitations (the artist chosen at random) and from the
    negatives: ``set_auc`` (AUC of its statistic), ``imitation_sets_detected``
    (share of imitation sets whose verdict at ``alpha`` names their artist)
    and ``negative_sets_flagged`` (share of negative sets with any verdict)."""
    nan = float("nan")
    if not imi.any() or not neg.any():
        return {"set_auc": nan, "imitation_sets_detected": nan, "negative_sets_flagged": nan}
    rng = np.random.default_rng(seed)
    imi_idx = np.flatnonzero(imi)
    by_artist = {a: imi_idx[truth[imi_idx] == a] for a in np.unique(truth[imi_idx])}
    keys = sorted(by_artist)
    neg_idx = np.flatnonzero(neg)
    col = {a: k for k, a in enumerate(cal.artists)}
    pos, negs, detected, false_flags = [], [], 0, 0
    for _ in range(n_sets):
        artist = keys[rng.integers(len(keys))]
        sample = _subset(j, rng.choice(by_artist[artist], set_size))
        tests = artist_tests(sample, cal)
        pos.append(set_statistic(sample, cal, tests))
        detected += col[artist] in imitated(tests, alpha)
        sample = _subset(j, rng.choice(neg_idx, set_size))
        tests = artist_tests(sample, cal)
        negs.append(set_statistic(sample, cal, tests))
        false_flags += len(imitated(tests, alpha)) > 0
    return {"set_auc": _auc(np.r_[np.ones(n_sets), np.zeros(n_sets)], np.r_[pos, negs]),
            "imitation_sets_detected": detected / n_sets,
            "negative_sets_flagged": false_flags / n_sets}


def write_outputs(result: Evaluation, out: str | Path, command: str = "") -> Path:
    """``metrics.json`` (:meth:`Evaluation.to_dict`), ``roc.png`` and ``report.html``
    (:func:`mimicry.report.evaluation_report`) under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    roc = result.scores
    labels = np.r_[np.ones(len(roc["imitation"])), np.zeros(len(roc["negative"]))]
    scores = np.r_[roc["imitation"], roc["negative"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    if 0 < labels.sum() < len(labels):
        f, t, _ = roc_curve(labels, scores)
        ax.plot(f, t, label=f"AUC {result.metrics['auc']:.3f}")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.axvline(0.01, ls="--", c="red", lw=0.8, label="1% FPR")
    ax.set_xlabel("false-positive rate (negatives)")
    ax.set_ylabel("true-positive rate (imitations)")
    ax.set_title("imitation vs negative, best artist score")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=100)
    plt.close(fig)
    from mimicry.report import evaluation_report, write_report

    write_report(evaluation_report(result, command), out / "report.html")
    return out / "metrics.json"
