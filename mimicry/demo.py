"""``mimicry demo``: the whole pipeline on images it makes itself, no data needed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from mimicry.index import StyleIndex
from mimicry.synthetic import make_dataset


def run_demo(out: str | Path, device: str = "auto", echo: Callable[[str], None] = print) -> float:
    """Builds a synthetic set under ``out``, indexes it, scans imitations and
    unrelated images, prints a table; returns the top-1 accuracy on imitations."""
    out = Path(out)
    if (out / "index").exists():
        shutil.rmtree(out / "index")
    data = make_dataset(out)
    echo(f"generated {len(list(data.portfolios.rglob('*.png')))} portfolio works by "
         f"{len(list(data.portfolios.iterdir()))} artists, "
         f"{sum(v is not None for v in data.truth.values())} imitations, "
         f"{sum(v is None for v in data.truth.values())} unrelated images in {out}")
    with StyleIndex.create(out / "index", device=device) as ix:
        report = ix.add_folder(data.portfolios)
        echo(f"indexed: embedded {report.embedded}, skipped {len(report.skipped)} "
             f"(backbone {ix.manifest.backbone_id}, dim {ix.manifest.dim})\n")
        results = ix.scan([data.imitations, data.unrelated], top=2)
    echo(f"{'image':<36} {'imitates':<15} {'nearest artist':<15} {'score':>6} {'runner-up':>9}  ok")
    hits = total = 0
    for r in results:
        name = Path(r.image).name
        truth = data.truth.get(name)
        best, second = r.matches[0], r.matches[1]
        ok = ""
        if truth is not None:
            total += 1
            hits += best.artist == truth
            ok = "yes" if best.artist == truth else "NO"
        echo(f"{name:<36} {truth or '-':<15} {best.artist:<15} {best.score:>6.3f} {second.score:>9.3f}  {ok}")
    accuracy = hits / total if total else 0.0
    echo(f"\nimitations attributed to the right artist: {hits}/{total} ({accuracy:.0%})")
    echo("unrelated photos have no artist; their scores show the background level.")
    return accuracy
