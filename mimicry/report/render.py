"""Builds each report's context from API results and renders its template.

Promises: the HTML is self-contained (images and plots are ``data:`` URIs,
the stylesheet is inlined, no scripts); with ``paths=False`` no file path
appears in it (works are named by id and sha256, as the service names them).
"""

from __future__ import annotations

import math
import os
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mimicry import __version__
from mimicry.images import ImageSource, source_name
from mimicry.report.thumbs import Thumbnails
from mimicry.results import Evidence, IndexInfo, ModelVerdict, ScanResult, p_text, percent_text, runtimes_text

if TYPE_CHECKING:  # pragma: no cover
    from jinja2 import Environment

    from mimicry.evaluate import Evaluation

HERE = Path(__file__).parent
#: Thumbnail sides in a scan report: the scanned image, and evidence works.
QUERY_SIDE, WORK_SIDE = 200, 256

#: Outline colours of the artists a model's samples support (colour-blind-safe
#: Okabe-Ito order); every outline is labelled with the name as well.
PALETTE = ("#d55e00", "#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#7a5c00", "#000000")

#: The banner of each verdict kind but "flagged" and "error" (which the
#: template words itself): its colour class, and what it means. Never green:
#: an image not flagged is not cleared.
BANNERS = {
    "not-flagged": ("neutral", "below the flag line of its nearest artist; the image p-value is the share "
                               "of art by nobody registered that scores this high"),
    "cannot-flag": ("grey", "too few images to keep the promised rate with any threshold, so nothing is "
                            "flagged: recalibrate with more background images"),
    "uncalibrated": ("grey", "nothing is flagged: run mimicry calibrate to flag at a promised rate"),
}


@lru_cache(maxsize=1)
def _env() -> "Environment":
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, f=".3f": "n/a" if v is None or v != v else format(v, f)
    env.filters["pct"] = percent_text
    env.filters["pval"] = p_text
    return env


def _when(ts: float | None) -> str | None:
    return None if not ts else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _css() -> str:
    return (HERE / "static" / "report.css").read_text(encoding="utf-8")


def _header(title: str, info: IndexInfo | None, command: str) -> dict[str, Any]:
    index = None
    if info is not None:
        recipe = info.recipe or {}
        p = info.promise or {}
        index = {"backbone": info.backbone_id, "model_spec": info.model_spec, "runtime": runtimes_text(info.runtimes, info.background_runtime),
                 "recipe": f"v{recipe.get('version', '?')}: {recipe.get('descriptor', '')}".strip(),
                 "artists": len(info.artists), "works": info.works, "calibration": info.calibration,
                 "calibrated_at": _when(info.calibrated_at), "fpr": info.fpr,
                 "negatives": p.get("negatives"), "source": p.get("source"),
                 "certified": p.get("certified"), "needed": p.get("needed")}
    return {"title": title, "index": index, "command": _command_text(command), "css": _css(), "version": __version__,
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _label(e: Evidence, paths: bool) -> str:
    return Path(e.path).name if paths and e.path else f"work #{e.work_id}"


def _evidence(e: Evidence, thumbs: Thumbnails, works: bool, paths: bool) -> dict[str, Any]:
    return {"label": _label(e, paths), "artist": e.artist, "similarity": e.similarity,
            "sha": e.sha256[:12], "thumb": thumbs.uri(e.path) if works and e.path else None}


#: Score bars show the range that matters, not 0 to 1 (raw similarities sit
#: near 0.9 for photos and flagged images alike): from the lowest score or
#: flag line shown less :data:`BAR_MARGIN`, to the highest plus it, in steps
#: of :data:`BAR_STEP`, at least :data:`BAR_MIN_SPAN` wide, within 0 to 1.
BAR_MARGIN, BAR_STEP, BAR_MIN_SPAN = 0.02, 0.05, 0.1


def bar_scale(results: Sequence[ScanResult]) -> tuple[float, float]:
    """(left, right): the similarities at the two ends of every score bar."""
    shown = [v for r in results for i, m in enumerate(r.matches)
             for v in (m.score, m.flag_at if i == 0 else None) if v is not None and 0 <= v <= 1]
    if not shown:
        return 0.0, 1.0
    lo = max(0.0, math.floor((min(shown) - BAR_MARGIN) / BAR_STEP) * BAR_STEP)
    hi = min(1.0, math.ceil((max(shown) + BAR_MARGIN) / BAR_STEP) * BAR_STEP)
    if hi - lo < BAR_MIN_SPAN:
        lo, hi = (max(0.0, hi - BAR_MIN_SPAN), hi) if hi - BAR_MIN_SPAN >= 0 else (0.0, BAR_MIN_SPAN)
    return round(lo, 4), round(hi, 4)


def _at(value: float | None, scale: tuple[float, float]) -> float | None:
    """Where ``value`` sits on a bar of ``scale``, in percent of its width (clamped)."""
    if value is None:
        return None
    lo, hi = scale
    return round(min(max((value - lo) / (hi - lo), 0.0), 1.0) * 100, 1)


def _command_text(command: str, limit: int = 6) -> str:
    """``command`` shortened for the header: past ``limit`` arguments that
    name files, ``mimicry scan 200 files: a.png, b.png, ... (+197)``."""
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:
        return command
    # A file is a positional word with a suffix (an option's value stays put).
    at = [i for i in range(1, len(words)) if not words[i].startswith("-") and Path(words[i]).suffix
          and not (words[i - 1].startswith("--") and "=" not in words[i - 1])]
    if len(at) <= limit:
        return command
    files, rest = [words[i] for i in at], [w for i, w in enumerate(words) if i not in set(at)]
    shown = ", ".join(Path(f).name for f in files[:3])
    return f"{shlex.join(rest)} {len(files)} files: {shown}, ... (+{len(files) - 3})"


def scan_report(results: Sequence[ScanResult], info: IndexInfo | None = None, command: str = "",
                sources: Sequence[ImageSource] | None = None, works: bool = True,
                paths: bool = True) -> str:
    """The HTML report of a scan. ``sources``: the scanned images in result
    order (default: each result's ``image`` read as a path); ``works``: embed
    the evidence works' thumbnails; ``paths``: name files by path (False: by
    upload name and work id only)."""
    thumbs, small = Thumbnails(QUERY_SIDE), Thumbnails(WORK_SIDE)
    srcs = list(sources) if sources is not None else [Path(r.image) for r in results]
    scale, items = bar_scale(results), []
    for r, src in zip(results, srcs):
        # Pictures for the nearest artist's works (the one a flag is about); the
        # other artists' evidence is listed by name, so 200 images stay a few MB.
        matches = [{"artist": m.artist, "score": m.score, "flag_at": m.flag_at, "flagged": bool(m.flagged),
                    "p_value": m.p_value, "fill": _at(m.score, scale), "line": _at(m.flag_at, scale),
                    "evidence": [_evidence(e, small, works and rank == 0, paths) for e in m.evidence]}
                   for rank, m in enumerate(r.matches)]
        kind, words = r.verdict_words()
        banner, detail = BANNERS.get(kind, ("", ""))
        items.append({"name": Path(r.image).name, "full": r.image if paths else "",
                      "thumb": thumbs.uri(src) if r.error is None else None, "error": r.error,
                      "artist": r.artist, "image_p": r.image_p_value, "matches": matches,
                      "kind": kind, "words": words, "banner": banner, "detail": detail,
                      "n_null": (r.promise or {}).get("negatives")})
    promise = next((r.promise for r in results if r.promise), None)
    warnings = next((r.warnings for r in results if r.warnings), [])
    ctx = _header("mimicry scan report", info, command)
    ctx.update(items=items, promise=promise, warnings=warnings, scale=scale,
               flagged=sum(1 for r in results if r.artist), errors=sum(1 for r in results if r.error))
    return _env().get_template("scan.html.j2").render(**ctx)


def model_report(verdict: ModelVerdict, info: IndexInfo | None = None, command: str = "",
                 sources: Sequence[ImageSource] | None = None, works: bool = True,
                 paths: bool = True) -> str:
    """The HTML report of a model-level verdict: the verdict and what its
    p-value means, a per-artist summary, every sample outlined by the artist it
    supports, and each supporting sample beside its nearest work. ``sources``:
    the inputs given to the scan, in order (default: ``verdict.samples`` read
    as paths); samples are matched to them by position, never by name."""
    thumbs = Thumbnails()
    given = list(sources) if sources is not None else None
    colours = {f.artist: PALETTE[i % len(PALETTE)] for i, f in enumerate(verdict.findings)}
    supports = verdict.supported_by()

    def source_of(i: int) -> ImageSource | None:
        """Sample ``i``'s image: by its position among the inputs (names may repeat)."""
        if given is None:
            return Path(verdict.samples[i])
        if verdict.inputs and verdict.inputs[i] < len(given):
            return given[verdict.inputs[i]]
        return next((x for x in given if source_name(x) == verdict.samples[i]), None)

    def sample(i: int) -> dict[str, Any]:
        return {"name": Path(verdict.samples[i]).name, "thumb": thumbs.uri(source_of(i)),
                "artist": supports.get(i), "colour": colours.get(supports.get(i, ""), "")}

    findings = [{"artist": f.artist, "p_value": f.p_value, "level": f.level, "supporting": f.supporting,
                 "flagged": f.flagged, "colour": colours[f.artist], "imitated": f.artist in verdict.artists,
                 "tier": f.tier, "p_tiers": {t: f.p_tiers.get(t, f.p_value) for t in ("imitates", "review")},
                 "p_images_makers": f.p_images_makers, "p_makers": f.p_makers, "nearest_samples": f.nearest_samples,
                 "pairs": [{"sample": sample(p.index), "p_value": p.p_value,
                            "work": _evidence(p.nearest, thumbs, works, paths)} for p in f.pairs]}
                for f in verdict.findings]
    best = findings[0] if findings else None
    ctx = _header("mimicry model report", info, command)
    ctx.update(verdict=verdict, findings=findings, samples=[sample(i) for i in range(len(verdict.samples))],
               n_null=(verdict.promise or {}).get("negatives"),
               sentence=_model_sentence(verdict), best=best,
               nearest=sorted(verdict.nearest.items(), key=lambda x: -x[1]),
               skipped=[{"name": Path(s.path).name, "reason": s.reason}
                        for s in verdict.skipped])
    return _env().get_template("model.html.j2").render(**ctx)


def _model_sentence(v: ModelVerdict) -> str:
    """What the verdict rests on, in one plain sentence."""
    if not v.findings:
        return (f"None of the {v.n_samples} samples is closer to a registered artist than art by "
                f"nobody registered usually is: no evidence either way.")
    f = v.findings[0]
    p_act, p_review = f.p_tiers.get("imitates", f.p_value), f.p_tiers.get("review", f.p_value)
    makers = v.tiers.get("review", {}).get("makers", 0)
    nulls = (f"single images by nobody registered and sets of works by {makers} makers nobody registered"
             if makers else "single images by nobody registered")
    if v.artists:
        return (f"The samples are closer to {f.artist} than models of styles nobody registered would be, "
                f"judged against {nulls}: p = {p_text(p_act)}, below the imitates tier's level {v.alpha:g}.")
    if v.review:
        act = v.tiers.get("imitates", {})
        why = (f"not strongly enough to act on at {v.alpha:g}" if act.get("resolvable", True) else
               f"and the imitates tier cannot be reached here ({v.n_samples} samples, {makers} makers)")
        return (f"The samples are closer to {f.artist} than is usual for {nulls} (p = {p_text(p_review)}, "
                f"below {v.review_alpha:g}), {why}: a person should compare the pairs below.")
    return (f"The closest artist, {f.artist} (review p = {p_text(p_review)}), is above both levels "
            f"({v.review_alpha:g} and {v.alpha:g}). That is not a clearance: a model with fewer or weaker "
            f"samples can imitate an artist without showing it here.")


def _evaluation_index(e: "Evaluation") -> dict[str, Any]:
    """The header's index block for an evaluation: the portfolio index it built
    from the manifest and calibrated at its target rate."""
    p = e.promise or {}
    return {"backbone": e.backbone or "unknown", "model_spec": "embedded by this run", "runtime": e.runtime,
            "recipe": "the evaluation's own index, built from the manifest's portfolio rows",
            "artists": e.n_artists, "works": e.n_genuine, "calibration": "calibrated by this run",
            "calibrated_at": None, "fpr": e.fpr_target if e.promise else None,
            "negatives": p.get("negatives"), "source": p.get("source"),
            "certified": p.get("certified"), "needed": p.get("needed")}


def evaluation_report(evaluation: "Evaluation", command: str = "", paths: bool = True) -> str:
    """The HTML report of an evaluation: metrics, ROC curve, score
    distributions with the flag threshold, and the worst misses beside their
    nearest works."""
    from mimicry.report.plots import distribution_svg, roc_svg

    thumbs = Thumbnails()
    e = evaluation
    rows = [{"metric": k, "clean": v, "perturbed": [per[p] for p in e.perturbations]}
            for k, v, per in e.table()]
    misses = [{"name": Path(m.path).name if paths else "", "role": m.role, "truth": m.truth,
               "best": m.best_artist, "statistic": m.statistic, "flagged_as": m.flagged_as,
               "thumb": thumbs.uri(m.path),
               "nearest": [_evidence(w, thumbs, True, paths) for w in m.nearest]} for m in e.misses]
    ctx = _header("mimicry evaluation report", None, command)
    ctx["index"] = _evaluation_index(e)
    ctx.update(rows=rows, perturbations=list(e.perturbations), e=e, misses=misses,
               threshold=e.threshold,
               roc=roc_svg(e.scores.get("imitation", []), e.scores.get("negative", []), e.metrics.get("auc"),
                           e.fpr_target),
               dist=distribution_svg(e.scores.get("imitation", []), e.scores.get("negative", []), e.threshold))
    return _env().get_template("evaluation.html.j2").render(**ctx)


#: File mode of a written report: the owner writes, everyone reads.
REPORT_MODE = 0o644


def write_report(html: str, path: str | Path) -> Path:
    """Writes ``html`` to ``path`` atomically (a temporary file renamed over it),
    readable by everyone (:data:`REPORT_MODE`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=path.parent)
    try:
        # A report is a document to share, not a secret. The mode is set on this
        # file alone: the process umask is never touched, since another thread
        # creating a file meanwhile would get it.
        os.fchmod(fd, REPORT_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
