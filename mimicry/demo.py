"""``mimicry demo``: the whole pipeline on images it makes itself, no data needed.

Index three procedural artists, calibrate against a background of photo-like
images, scan a pretend fine-tune of a fourth artist as a hub would (recorded),
register the fourth artist and look back (:mod:`mimicry.demo_loop`: a case
about them opens), then scan imitations and photos (calibrated flags) and give
model-level verdicts on two sets of samples: the fine-tune's, and unrelated images.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from mimicry.backbones import Embedder
from mimicry.demo_loop import LoopResult, record_model_scan, register_and_look_back, say
from mimicry.index import StyleIndex
from mimicry.report import model_report, scan_report, write_report
from mimicry.synthetic import STYLES, make_dataset, paint, photo_like, scene
from mimicry.results import ModelVerdict, p_text, percent_text


@dataclass
class DemoResult:
    """What the demo measured."""

    top1: float  # imitations whose nearest artist is the one imitated
    flagged_right: float  # imitations flagged as the artist imitated
    photos_flagged: int  # unrelated photos flagged as any artist
    fine_tune: ModelVerdict  # samples of a pretend fine-tune of ``fine_tuned_artist``
    unrelated_model: ModelVerdict  # samples that imitate nobody
    fine_tuned_artist: str
    loop: LoopResult | None = None  # the moderation loop: the lookback's case about the fine-tuned artist

    def to_dict(self) -> dict:
        return {"top1": self.top1, "flagged_right": self.flagged_right,
                "photos_flagged": self.photos_flagged, "fine_tuned_artist": self.fine_tuned_artist,
                "fine_tune": self.fine_tune.to_dict(), "unrelated_model": self.unrelated_model.to_dict(),
                "loop": None if self.loop is None else asdict(self.loop)}


#: Background images the demo calibrates with: enough to flag at 1% at all
#: (a rate of 1% needs at least 99 null images; a real hub certifies with 300),
#: by :data:`MAKERS` makers (sub-folders), enough for the maker test to back
#: the review tier (40 at 0.05).
BACKGROUND, MAKERS = 120, 40


def _model_samples(out: Path, n: int = 12) -> tuple[Path, Path, str]:
    style = STYLES[2]
    tuned, unrelated = out / "samples-fine-tune", out / "samples-unrelated"
    for folder in (tuned, unrelated):
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        paint(scene(60_000 + i), style, 61_000 + i).save(tuned / f"sample-{i:02d}.png", compress_level=1)
        photo_like(62_000 + i).save(unrelated / f"sample-{i:02d}.png", compress_level=1)
    return tuned, unrelated, style.name


def _said(verdict: ModelVerdict) -> str:
    """A model verdict in a few words."""
    best = verdict.findings[0] if verdict.findings else None
    p = "" if best is None else f" (p={p_text(best.p_tiers.get('imitates' if verdict.artists else 'review', 1.0))})"
    if verdict.artists:
        return f"imitates {', '.join(verdict.artists)}{p}"
    if verdict.review:
        return f"review for {', '.join(verdict.review)}{p}"
    return "not flagged at either tier (not cleared: too little evidence either way)"


def _background(folder: Path) -> Path:
    """The demo's background: :data:`BACKGROUND` photo-like images by :data:`MAKERS` makers."""
    shutil.rmtree(folder, ignore_errors=True)  # an earlier demo's, laid out differently
    for i in range(BACKGROUND):
        maker = folder / f"maker-{i % MAKERS:02d}"
        maker.mkdir(parents=True, exist_ok=True)
        photo_like(50_000 + i).save(maker / f"bg-{i:03d}.png", compress_level=1)
    return folder


def run_demo(out: str | Path, device: str = "auto", echo: Callable[[str], None] = print,
             embedder: Embedder | None = None, runtime: str | None = None) -> DemoResult:
    """Builds a synthetic set under ``out`` (replacing an earlier demo's index),
    runs index, calibrate, scan and scan-model on it, prints what a user would
    see, ending with its own wall time, and returns the measured :class:`DemoResult`."""
    started, out = time.perf_counter(), Path(out)
    if (out / "index").exists():
        shutil.rmtree(out / "index")
    data, background = make_dataset(out), _background(out / "background")
    tuned, unrelated, tuned_artist = _model_samples(out)
    echo(f"generated {len(list(data.portfolios.rglob('*.png')))} portfolio works by "
         f"{len(list(data.portfolios.iterdir()))} artists, "
         f"{sum(v is not None for v in data.truth.values())} imitations, "
         f"{sum(v is None for v in data.truth.values())} unrelated photos, a background of {BACKGROUND} by {MAKERS} makers "
         f"and two sets of model samples in {out}")
    with StyleIndex.create(out / "index", device=device, embedder=embedder, runtime=runtime) as ix:
        first = {p.name: [p] for p in sorted(data.portfolios.iterdir()) if p.name != tuned_artist}
        report = ix.sync(first)
        echo(f"indexed {len(first)} artists: embedded {report.embedded}, skipped {len(report.skipped)} "
             f"(backbone {ix.pin.backbone_id}, dim {ix.pin.dim}, on {ix.embedder.runtime})")
        cal = ix.calibrate(background=[background])
        promise = cal.promise()
        echo(f"calibrated: at most {percent_text(cal.fpr)} of images by nobody registered are flagged "
             f"({promise['negatives']} background images; "
             f"{'certified' if promise['certified'] else 'a real hub brings ' + str(promise['needed'])})")
        mdb, before = record_model_scan(ix, tuned)
        loop = register_and_look_back(ix, mdb, tuned_artist, data.portfolios / tuned_artist, before)
        say(loop, tuned_artist, out / "index", echo)
        echo("")
        results = ix.scan([data.imitations, data.unrelated], top=2)
        fine_tune = ix.scan_model([tuned])
        unrelated_model = ix.scan_model([unrelated])
        info = ix.info()
    write_report(scan_report(results, info, "mimicry demo"), out / "report-scan.html")
    write_report(model_report(fine_tune, info, "mimicry demo"), out / "report-model.html")

    echo(f"{'image':<34} {'imitates':<14} {'flagged as':<14} {'nearest':<14} {'score':>6} {'p':>6}")
    top1 = right = photos = n_imi = 0
    for r in results:
        name = Path(r.image).name
        truth = data.truth.get(name)
        best = r.matches[0]
        if truth is None:
            photos += r.artist is not None
        else:
            n_imi += 1
            top1 += best.artist == truth
            right += r.artist == truth
        echo(f"{name:<34} {truth or '-':<14} {r.artist or '-':<14} {best.artist:<14} "
             f"{best.score:>6.3f} {p_text(best.fpr):>6}")
    echo(f"\nimitations: nearest artist right {top1}/{n_imi}, flagged as the right artist "
         f"{right}/{n_imi}; unrelated photos flagged: {photos}/{len(results) - n_imi}")
    for title, verdict in ((f"samples of a fine-tune on {tuned_artist}", fine_tune),
                           ("samples of an unrelated model", unrelated_model)):
        echo(f"model verdict, {verdict.n_samples} {title}: {_said(verdict)}")
    echo(f"\nreports to look at: {out / 'report-scan.html'} and {out / 'report-model.html'}")
    echo(f"demo took {time.perf_counter() - started:.1f} s")
    return DemoResult(top1 / max(n_imi, 1), right / max(n_imi, 1), photos, fine_tune,
                      unrelated_model, tuned_artist, loop)
