"""Evaluation on a labelled set (:mod:`mimicry.labelled`), measured through
the same functions a scan uses.

The portfolio becomes an in-memory :class:`~mimicry.store.Snapshot`, calibrated
by :func:`mimicry.calibration.calibrate_snapshot`; queries are scored by
:func:`mimicry.scoring.score` and judged by
:func:`mimicry.scanning.judge_aligned`, image verdicts come from
:func:`mimicry.flagging.image_verdicts` and model verdicts from
:func:`mimicry.model_test.judge_set` at ``Settings.alpha`` and
``Settings.review_alpha``: exactly what ``scan`` and ``scan-model`` run.
Metrics: :mod:`mimicry.metrics` and :mod:`mimicry.model_metrics`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mimicry.backbones import DEFAULT_MODEL, Embedder, load_embedder
from mimicry.calibration import calibrate_snapshot
from mimicry.engines import Embedded, ProgressFn
from mimicry.engines.local import LocalEngine
from mimicry.errors import InputError
from mimicry.flagging import Judged, with_calibration
from mimicry.scanning import Calibrated, judge_aligned
from mimicry.images import expand_inputs
from mimicry.labelled import LabelledRow, choose_unregistered, read_labelled, scan_role, split_background
from mimicry.metrics import METRIC_KEYS, UNREGISTERED_KEYS, Miss, scan_metrics, worst_misses
from mimicry.model_metrics import maker_metrics, model_metrics
from mimicry.perturbations import PERTURBATIONS, embed_perturbed
from mimicry.portfolio import background_groups
from mimicry.results import Skipped
from mimicry.scoring import score
from mimicry.settings import check_rate, get_settings
from mimicry.store.snapshot import Snapshot
from mimicry.vector_cache import embed_cached

#: ``embed(paths)``: the readable paths embedded (keyed by path), failures with their reasons.
EmbedFn = Callable[[list[Path]], Embedded]


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
    misses: list[Miss] = field(default_factory=list)  # the worst misses, worst first
    alpha: float | None = None  # the significance level of the model verdicts on sets
    review_alpha: float | None = None  # that of their review tier
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model: sets judged at each tier
    makers: dict[str, Any] = field(default_factory=dict)  # held-out makers, each one set
    backbone: str | None = None  # the backbone that embedded everything (the report's header)
    n_artists: int = 0  # registered artists in the evaluation's own portfolio index
    runtime: str | None = None  # what ran the model for the vectors this run embedded

    def to_dict(self) -> dict[str, Any]:
        """The flat object ``--json`` prints and ``metrics.json`` holds (a metric
        that cannot be measured here, such as ``background_flagged`` without a
        background, is null)."""
        return {**_nulls(self.metrics), "n_genuine": self.n_genuine, "n_imitation": self.n_imitation,
                "n_negative": self.n_negative, "n_skipped": len(self.skipped),
                "skipped": [asdict(s) for s in self.skipped],
                "unregistered_artists": list(self.unregistered_artists),
                "fpr_target": self.fpr_target, "alpha": self.alpha, "review_alpha": self.review_alpha,
                "promise": self.promise, "models": self.models, "makers": self.makers,
                "perturbations": {k: _nulls(v) for k, v in self.perturbations.items()}}

    def table(self) -> list[tuple[str, float, dict[str, float]]]:
        """Rows (metric, clean value, value under each perturbation) for display."""
        keys = list(METRIC_KEYS) + [k for k in UNREGISTERED_KEYS if k in self.metrics]
        return [(k, self.metrics[k], {p: m.get(k, float("nan")) for p, m in self.perturbations.items()})
                for k in keys]


def _nulls(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN (not measurable) as None, so the JSON is valid everywhere."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}


@dataclass(frozen=True)
class _Background:
    """Background vectors: those the calibration rests on (with their groups)
    and those held out to measure ``background_flagged`` (None: none given)."""

    cal: np.ndarray | None = None
    held: np.ndarray | None = None
    groups: np.ndarray | None = None
    held_groups: np.ndarray | None = None  # the held-out images' makers


@dataclass(frozen=True)
class _Queries:
    """The scanned rows: paths, roles (:func:`~mimicry.labelled.scan_role`),
    the artist each imitates ("" for none) and their vectors."""

    paths: list[Path]
    roles: np.ndarray
    truth: np.ndarray
    vecs: np.ndarray
    models: np.ndarray  # the model that made each ("" for none)


def runtime_of(embedder: Embedder, cache: str | Path | None) -> str | None:
    """What ran the model, as the report's header says it (the vector cache
    reuses vectors whichever runtime made them: they are the same vectors)."""
    runtime = getattr(embedder, "runtime", None)
    return f"{runtime}; cached vectors reused" if runtime and cache is not None else runtime


def evaluate(
    manifest: str | Path | Sequence[str | Path],
    model: str = DEFAULT_MODEL,
    device: str = "auto", runtime: str | None = None,
    unregistered: int = 0,
    seed: int = 0,
    perturb: bool = False,
    fpr: float = 0.01,
    batch_size: int = 32,
    out: str | Path | None = None,
    embedder: Embedder | None = None,
    background: Sequence[str | Path] | None = None,
    heldout_background: Sequence[str | Path] | None = None,
    cache: str | Path | None = None, progress: ProgressFn | None = None,
    sets: int = 200,
    command: str = "",
    alpha: float | None = None,
    review_alpha: float | None = None,
) -> Evaluation:
    """Runs the evaluation of a labelled set, or of several together (see docs, "Accuracy").

    ``fpr``: the calibration's target rate (``tpr_at_fpr`` is measured at it).
    ``background``: folders of art by nobody registered, the calibration's
    reference population; without ``heldout_background`` it is split in half
    by sub-folder (artist), seeded, and the other half is held out to measure
    ``background_flagged``. ``cache``: a folder for :mod:`mimicry.vector_cache`
    (None: embed everything); ``progress(stage, done, total)`` as it embeds. ``sets``: sets of each size drawn for the
    model-level metrics, judged at ``alpha`` (None: ``Settings.alpha``, as
    ``scan-model``; ``review_alpha`` likewise): on imitation and negative
    sets, on the sets of each model a manifest names (``models``) and on each
    held-out maker of the background (``makers``). With ``out``, writes
    ``metrics.json``, ``roc.png`` and ``report.html`` (headed by ``command``,
    the command that made it). ``runtime``: what runs the model (None: ``MIMICRY_RUNTIME``).
    """
    alpha, review_alpha = _alphas(alpha, review_alpha)
    manifests = [manifest] if isinstance(manifest, (str, Path)) else list(manifest)
    rows, manifest = [r for m in manifests for r in read_labelled(m)], ", ".join(map(str, manifests))
    embedder, unreg = embedder or load_embedder(model, device, runtime), choose_unregistered(rows, unregistered, seed)
    got = (embed := _embed_fn(embedder, cache, batch_size, progress))(sorted({r.path for r in rows}))
    vecs = dict(zip(got.keys, got.vectors))
    skipped = got.skipped()
    bg = _background(embed, background, heldout_background, seed, skipped)
    h = _harness(manifest, rows, unreg, vecs, bg, fpr, seed, sets, (alpha, review_alpha))
    cal, q = h.aligned.cal, h.q
    clean = h.judged(q.vecs)
    metrics, scores = h.measure(clean)
    result = Evaluation(metrics, h.n_genuine, int((q.roles == "imitation").sum()),
                        int((q.roles != "imitation").sum()), skipped, sorted(unreg), fpr, {}, scores,
                        cal.promise(), cal.flag_threshold if cal.can_flag else None,
                        worst_misses(h.snapshot, clean, q.vecs, q.roles, q.truth, q.paths), alpha, review_alpha,
                        model_metrics(clean, cal, q.models, q.truth, seed, sets, alpha, review_alpha),
                        {} if h.held is None else maker_metrics(h.held, bg.held_groups, cal, alpha, review_alpha),
                        getattr(embedder, "backbone_id", None), len(h.snapshot.artists), runtime_of(embedder, cache))
    if perturb:
        for name, fn in PERTURBATIONS.items():
            pv = embed_perturbed(embedder, q.paths, fn)
            result.perturbations[name] = h.measure(h.judged(np.stack([pv.get(p, vecs[p]) for p in q.paths])))[0]
    if out is not None:
        write_outputs(result, out, command)
    return result


def _alphas(alpha: float | None, review_alpha: float | None) -> tuple[float, float]:
    """The two tiers' levels, each from the settings unless given."""
    s = get_settings()
    return (check_rate("alpha", s.alpha if alpha is None else alpha),
            check_rate("review_alpha", s.review_alpha if review_alpha is None else review_alpha))


def _embed_fn(embedder: Embedder, cache: str | Path | None, batch_size: int,
              progress: ProgressFn | None = None) -> EmbedFn:
    """How the evaluation embeds: through the vector cache when it has one."""
    def embed(paths: list[Path]) -> Embedded:
        if cache is not None:
            return embed_cached(embedder, paths, Path(cache), batch_size, progress)
        return Embedded.gather(LocalEngine(embedder).embed(paths, batch_size=batch_size, progress=progress,
                                                           stage="embedding"), embedder.dim)
    return embed


@dataclass(frozen=True)
class _Harness:
    """A freshly calibrated portfolio and the queries scanned against it."""

    snapshot: Snapshot
    aligned: Calibrated  # covers every artist: the calibration is fresh
    n_genuine: int
    q: _Queries
    held: Judged | None  # the held-out background, judged
    seed: int
    sets: int
    alphas: tuple[float, float]  # of the imitates and review tiers
    fpr: float

    def judged(self, qvecs: np.ndarray) -> Judged:
        """Query vectors judged as a scan judges them, every artist scored exactly."""
        return judge_aligned(self.snapshot, self.aligned, score(self.snapshot, qvecs).raw, qvecs)

    def measure(self, j: Judged) -> tuple[dict[str, float], dict[str, list[float]]]:
        """:func:`~mimicry.metrics.scan_metrics` of the queries judged ``j``."""
        return scan_metrics(j, self.aligned.cal, self.q.roles, self.q.truth, self.seed, self.held, self.sets,
                            alpha=self.alphas[0], fpr=self.fpr, review_alpha=self.alphas[1])


def _harness(manifest: str | Path, rows: list[LabelledRow], unreg: set[str], vecs: dict[Path, np.ndarray],
             bg: _Background, fpr: float, seed: int, sets: int, alphas: tuple[float, float]) -> _Harness:
    """The portfolio calibrated at ``fpr`` (:func:`calibrate_snapshot`, as
    ``calibrate`` runs it), the rows to scan, and the held-out background judged."""
    snapshot, n_genuine = _portfolio(manifest, rows, unreg, vecs, bg)
    snapshot = with_calibration(snapshot, calibrate_snapshot(snapshot, fpr))
    aligned = Calibrated.align(snapshot)
    assert aligned is not None  # a fresh calibration of two or more artists covers them all
    q = _queries(manifest, rows, snapshot.artists, unreg, vecs)
    h = _Harness(snapshot, aligned, n_genuine, q, None, seed, sets, alphas, fpr)
    if bg.held is not None and len(bg.held):
        h = replace(h, held=h.judged(bg.held))
    return h


def _background(embed: EmbedFn, background: Sequence[str | Path] | None,
                heldout: Sequence[str | Path] | None, seed: int, skipped: list[Skipped]) -> _Background:
    """The background, embedded, split into calibrating and held-out halves by
    group (unless ``heldout`` is given); unreadable images are added to ``skipped``."""
    if heldout and not background:
        raise InputError("--heldout-background needs --background (the images to calibrate with)")
    if not background:
        return _Background()
    got = embed([Path(p) for p in expand_inputs(background)])
    skipped += got.skipped()
    groups = background_groups(got.keys, list(background))
    if heldout:
        held_got = embed([Path(p) for p in expand_inputs(heldout)])
        skipped += held_got.skipped()
        out = _Background(got.vectors, held_got.vectors, groups, background_groups(held_got.keys, list(heldout)))
    else:
        keep, held = split_background(got.keys, groups, seed)
        out = _Background(got.vectors[keep], got.vectors[held], groups[keep], groups[held])
    if not len(out.cal):
        raise InputError("no readable background images in " + ", ".join(map(str, background)))
    return out


def _portfolio(manifest: str | Path, rows: list[LabelledRow], unreg: set[str], vecs: dict[Path, np.ndarray],
               bg: _Background) -> tuple[Snapshot, int]:
    """The in-memory snapshot of the registered artists' readable genuine works
    (with the calibrating background), and how many works it holds."""
    portfolio = [r for r in rows if r.role == "genuine" and r.artist not in unreg and r.path in vecs]
    if len({r.artist for r in portfolio}) < 2:
        raise InputError(f"{manifest}: evaluation needs genuine works of at least two artists")
    snapshot = Snapshot.from_labelled(np.stack([vecs[r.path] for r in portfolio]),
                                      [r.artist for r in portfolio], [str(r.path) for r in portfolio],
                                      background=bg.cal, background_groups=bg.groups)
    return snapshot, len(portfolio)


def _queries(manifest: str | Path, rows: list[LabelledRow], artists: Sequence[str], unreg: set[str],
             vecs: dict[Path, np.ndarray]) -> _Queries:
    """The readable rows that are scanned, with their roles."""
    queries = [(r, k) for r in rows if (k := scan_role(r, artists, unreg)) is not None and r.path in vecs]
    if not queries:
        raise InputError(f"{manifest}: no readable imitation or negative rows to scan")
    paths = [r.path for r, _ in queries]
    return _Queries(paths, np.array([k for _, k in queries]), np.array([r.artist for r, _ in queries]),
                    np.stack([vecs[p] for p in paths]), np.array([r.model for r, _ in queries]))


def write_outputs(result: Evaluation, out: str | Path, command: str = "") -> Path:
    """``metrics.json`` (:meth:`Evaluation.to_dict`), ``roc.png`` (vertical line
    at the calibrated rate) and ``report.html``
    (:func:`mimicry.report.evaluation_report`) under ``out``."""
    from mimicry.report import evaluation_report, write_report
    from mimicry.report.plots import roc_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    roc_png(result.scores.get("imitation", []), result.scores.get("negative", []), result.metrics.get("auc"),
            result.fpr_target, out / "roc.png")
    write_report(evaluation_report(result, command), out / "report.html")
    return out / "metrics.json"
