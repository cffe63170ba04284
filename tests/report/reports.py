"""Reports the tests render: from the demo's calibrated index (real scans and
verdicts), and a 200-sample verdict with very long artist names for layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mimicry import StyleIndex
from mimicry.report import model_report, scan_report
from mimicry.results import ArtistFinding, Evidence, ModelVerdict, SupportingSample

LONG = "Anna-Maria Konstantinopoulou-Vanderbilt de la Cruz y Montenegro-Featherstonehaugh"


def demo_scan(demo, embedder) -> tuple[str, list]:
    """The scan report of two imitations of the fine-tuned artist and one photo."""
    res, _, out = demo
    target = res.fine_tuned_artist
    images = [out / "imitations" / f"imitation-of-{target}-{i}.png" for i in (0, 1)] + \
        [out / "unrelated" / "photo-00.png"]
    with StyleIndex.open(out / "index", embedder=embedder) as ix:
        results = ix.scan(images)
        return scan_report(results, ix.info(), "mimicry scan imitations photo-00.png"), results


def demo_model(demo, embedder) -> tuple[str, ModelVerdict]:
    res, _, out = demo
    with StyleIndex.open(out / "index", embedder=embedder) as ix:
        verdict = ix.scan_model([out / "samples-fine-tune"])
        return model_report(verdict, ix.info(), "mimicry scan-model samples-fine-tune"), verdict


def many_samples(folder: Path, n: int = 200, side: int = 512) -> list[Path]:
    """``n`` textured images (gradients with noise: thumbnails as large as real art's)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    # One noise field twice the side, each image a different window of it: every
    # image is as noisy as one with its own noise (so its JPEG and thumbnail are
    # as large), and distinct, for a 20th of the random numbers.
    noise = rng.normal(0, 18, (2 * side, 2 * side, 3)).astype(np.float32)
    paths = []
    for i in range(n):
        base = np.stack([x * rng.uniform(80, 255), y * rng.uniform(80, 255), (x + y) * 120], -1)
        r, c = rng.integers(0, side, 2)
        img = np.clip(base + noise[r:r + side, c:c + side], 0, 255).astype(np.uint8)
        p = folder / f"sample-with-a-rather-long-file-name-{i:03d}.jpg"
        Image.fromarray(img).save(p, quality=90)
        paths.append(p)
    return paths


def big_verdict(samples: list[Path], works: list[Path]) -> ModelVerdict:
    """A verdict on 200 samples: half support one long-named artist, a quarter another."""
    names = [str(p) for p in samples]

    def finding(artist: str, rows: list[int], p: float) -> ArtistFinding:
        ev = [Evidence(k, artist, f"{k:064x}", 0.9 - 0.001 * k, str(works[k % len(works)])) for k in range(3)]
        pairs = [SupportingSample(names[i], 0.01, ev[i % 3], i) for i in rows]
        return ArtistFinding(artist, len(rows) // 2, p, 0.05, len(rows), [names[i] for i in rows], ev, pairs,
                             list(rows))

    a, b = LONG, LONG.replace("Anna", "Bartholomew")
    findings = [finding(a, list(range(0, 100)), 1e-40), finding(b, list(range(100, 150)), 0.02)]
    return ModelVerdict(len(names), 0.001, [a], findings, [], [], {"fpr": 0.01, "negatives": 300,
                        "source": "background", "certified": True, "needed": 300, "can_flag": True}, names)


def demo_evaluation(demo, embedder, out_dir: Path):
    """``evaluate --out`` on a manifest of the demo's own images (portfolios
    genuine, imitations, photos negative) with its background: report.html."""
    from mimicry.evaluate import evaluate

    res, _, out = demo
    lines = ["path,role,artist"]
    lines += [f"{p},genuine,{p.parent.name}" for p in sorted((out / "portfolios").rglob("*.png"))]
    lines += [f"{p},imitation,{p.stem.removeprefix('imitation-of-').rsplit('-', 1)[0]}"
              for p in sorted((out / "imitations").glob("*.png"))]
    lines += [f"{p},negative," for p in sorted((out / "unrelated").glob("*.png"))]
    lines += [f"{p},negative," for p in sorted((out / "samples-unrelated").glob("*.png"))]
    manifest = out_dir / "manifest.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.write_text("\n".join(lines) + "\n")
    result = evaluate(manifest, embedder=embedder, background=[out / "background"], fpr=0.2, sets=20,
                      out=out_dir, command="mimicry evaluate manifest.csv --background background")
    return out_dir / "report.html", result
