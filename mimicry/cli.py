"""The ``mimicry`` command line: a thin face on :class:`mimicry.StyleIndex`.

Exit codes: 0 ok; 1 findings flagged (``scan``); 2 usage or input error, or
nothing at all could be read.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from mimicry.backbones import DEFAULT_MODEL, BackboneError
from mimicry.index import StyleIndex
from mimicry.manifest import IndexMismatchError
from mimicry.portfolio import PortfolioError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Detect imitation of registered artists' styles.")

INDEX_HELP = "Index folder (default: $MIMICRY_INDEX)."
# Options every command spells the same way.
INDEX_OPT = typer.Option(None, "--index", "-i", help=INDEX_HELP)
MODEL_OPT = typer.Option(DEFAULT_MODEL, help="default | clip:ARCH/TAG | clip-file:ARCH:PATH")
DEVICE_OPT = typer.Option("auto", help="auto | cpu | cuda")
JSON_OPT = typer.Option(False, "--json", help="Print JSON.")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress bar or info logging.")
USAGE_ERRORS = (BackboneError, IndexMismatchError, PortfolioError, FileNotFoundError, KeyError, ValueError)


def _index_dir(index: Optional[Path]) -> Path:
    if index is not None:
        return index
    env = os.environ.get("MIMICRY_INDEX")
    if env:
        return Path(env)
    _fail("no index given: pass --index DIR or set MIMICRY_INDEX")
    raise AssertionError  # unreachable


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"mimicry: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _usage_errors() -> Iterator[None]:
    """Turns the API's input errors into one line on stderr and exit code 2."""
    try:
        yield
    except USAGE_ERRORS as exc:
        _fail(str(exc).strip("'\""))


@contextmanager
def _opened(index: Optional[Path], device: str = "auto") -> Iterator[StyleIndex]:
    """The index named by ``--index`` or ``MIMICRY_INDEX``, input errors handled."""
    with _usage_errors(), StyleIndex.open(_index_dir(index), device=device) as ix:
        yield ix


def _emit(obj: object) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def index(
    portfolios: Path = typer.Argument(..., help="Folder of artist folders, or a path,artist CSV."),
    index: Optional[Path] = INDEX_OPT,
    model: str = MODEL_OPT,
    batch_size: int = typer.Option(32, min=1, help="Images per model batch."),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Embed portfolios into an index (incremental: unchanged files cost nothing)."""
    _setup_logging(quiet)
    folder = _index_dir(index)
    with _usage_errors(), StyleIndex.create(folder, model=model, device=device) as ix:
        report = ix.add_folder(portfolios, batch_size=batch_size, progress=not quiet)
    if as_json:
        _emit(report.to_dict())
    else:
        typer.echo(f"embedded {report.embedded}, unchanged {report.unchanged}, removed {report.removed}; "
                   f"index holds {report.works} works by {report.artists} artists; "
                   f"skipped {len(report.skipped)}")
        for s in report.skipped:
            typer.echo(f"skipped {s.path}: {s.reason}", err=True)
    if report.works == 0 and report.skipped:
        raise typer.Exit(2)


@app.command()
def scan(
    images: List[Path] = typer.Argument(..., help="Image files or folders."),
    index: Optional[Path] = INDEX_OPT,
    top: int = typer.Option(3, min=1, help="Artists to report per image."),
    evidence: int = typer.Option(3, min=1, help="Nearest works to show per artist."),
    batch_size: int = typer.Option(32, min=1),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Score images against every registered artist, with the nearest works as evidence."""
    _setup_logging(quiet)
    with _opened(index, device) as ix:
        results = ix.scan(images, top=top, evidence=evidence, batch_size=batch_size,
                          progress=not quiet)
    if not results:
        _fail("no images found in " + ", ".join(map(str, images)))
    for r in results:
        if as_json:
            _emit(r.to_dict())
        elif r.error:
            typer.echo(f"{r.image}\n  error: {r.error}")
        else:
            verdict = f"   FLAGGED: imitates {r.artist}" if r.artist else ""
            typer.echo(f"{r.image}{verdict}")
            for m in r.matches:
                near = ", ".join(f"{Path(e.path).name} ({e.similarity:.3f})" for e in m.evidence)
                flag = "" if m.flagged is None else (f"  flag fpr {m.fpr:.3f}" if m.flagged else f"  fpr {m.fpr:.3f}")
                typer.echo(f"  {m.artist:<28} {m.score:.3f}{flag}   nearest: {near}")
    if all(r.error for r in results):
        raise typer.Exit(2)
    if any(r.artist for r in results):
        raise typer.Exit(1)


@app.command()
def calibrate(
    index: Optional[Path] = INDEX_OPT,
    background: Optional[List[Path]] = typer.Option(None, help="Folder(s) of unrelated images used as extra negatives."),
    fpr: float = typer.Option(0.01, help="Target false-positive rate per artist."),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Compute per-artist thresholds so that at most FPR of negatives are flagged."""
    _setup_logging(quiet)
    with _opened(index, device) as ix:
        cal = ix.calibrate(background=background, fpr=fpr, progress=not quiet)
    data = {"fpr": cal.fpr, "n_background": cal.n_background,
            "artists": {a: {"threshold": float(t), "mean": float(m), "std": float(sd), "negatives": len(n)}
                        for a, t, m, sd, n in zip(cal.artists, cal.threshold, cal.mu, cal.sigma, cal.negatives)}}
    if as_json:
        _emit(data)
        return
    typer.echo(f"calibrated {len(cal.artists)} artists at fpr {cal.fpr} "
               f"({cal.n_background} background images)")
    for a, d in data["artists"].items():
        typer.echo(f"  {a:<28} threshold {d['threshold']:.3f}  negatives {d['negatives']}")


@app.command("scan-model")
def scan_model(
    samples: List[Path] = typer.Argument(..., help="Folder(s) of images sampled from one model."),
    index: Optional[Path] = INDEX_OPT,
    alpha: float = typer.Option(0.001, help="Significance level of the verdict."),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Verdict on a fine-tuned model from 8-200 of its samples: which artist, if any, it imitates."""
    _setup_logging(quiet)
    with _opened(index, device) as ix:
        verdict = ix.scan_model(samples, alpha=alpha)
    if not 8 <= verdict.n_samples <= 200:
        typer.echo(f"mimicry: warning: {verdict.n_samples} samples; the test is designed for 8 to 200", err=True)
    if as_json:
        _emit(verdict.to_dict())
    else:
        who = ", ".join(verdict.artists) or "no registered artist"
        typer.echo(f"{verdict.n_samples} samples: imitates {who} (alpha {verdict.alpha})")
        for f in verdict.findings:
            typer.echo(f"  {f.artist:<28} p={f.p_value:.2e}  {f.supporting}/{verdict.n_samples} samples "
                       f"at fpr <= {f.level:.0%} ({f.flagged} flagged)  "
                       f"nearest works: {', '.join(Path(w).name for w in f.nearest_works)}")
    if verdict.artists:
        raise typer.Exit(1)


@app.command()
def info(
    index: Optional[Path] = INDEX_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show the index's model pin, artists and work counts."""
    from dataclasses import asdict

    with _opened(index) as ix:
        data = asdict(ix.info())
    if as_json:
        _emit(data)
        return
    typer.echo(f"index     {data['path']}\nbackbone  {data['backbone_id']} ({data['model_spec']})\n"
               f"weights   sha256 {data['weights_sha256']}\ndimension {data['dim']}\n"
               f"works     {data['works']} by {len(data['artists'])} artists")
    for name, n in data["artists"].items():
        typer.echo(f"  {name:<28} {n}")


@app.command()
def remove(
    artist: str = typer.Argument(..., help="Artist name as indexed."),
    index: Optional[Path] = INDEX_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Remove an artist and all their vectors."""
    with _opened(index) as ix:
        n = ix.remove_artist(artist)
    if as_json:
        _emit({"artist": artist, "removed": n})
    else:
        typer.echo(f"removed {artist} ({n} works)")


@app.command()
def evaluate(
    manifest: Path = typer.Argument(..., help="CSV with path, role, artist columns."),
    model: str = MODEL_OPT,
    out: Optional[Path] = typer.Option(None, help="Folder for metrics.json and roc.png."),
    unregistered: int = typer.Option(0, help="Move N artists out of the portfolio; their art becomes negatives."),
    seed: int = typer.Option(0, help="Seed for --unregistered and set sampling."),
    perturb: bool = typer.Option(False, help="Repeat the scan under JPEG, downscale, noise, crop and flip."),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Index a manifest's genuine works, scan the rest, report attribution and detection metrics."""
    from mimicry.evaluate import METRIC_KEYS
    from mimicry.evaluate import evaluate as run_evaluate

    with _usage_errors():
        data = run_evaluate(manifest, model=model, device=device, unregistered=unregistered,
                            seed=seed, perturb=perturb, out=out)
    data.pop("roc", None)
    if as_json:
        _emit(data)
        return
    keys = list(METRIC_KEYS) + [k for k in ("auc_unregistered", "tpr_at_1pct_fpr_unregistered") if k in data]
    typer.echo(f"{'metric':<30} {'clean':>7} " + " ".join(f"{p:>14}" for p in data["perturbations"]))
    for key in keys:
        row = " ".join(f"{data['perturbations'][p].get(key, float('nan')):>14.3f}" for p in data["perturbations"])
        typer.echo(f"{key:<30} {data[key]:>7.3f} {row}")
    typer.echo(f"genuine {data['n_genuine']}, imitation {data['n_imitation']}, "
               f"negative {data['n_negative']}, skipped {data['n_skipped']}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), help="Where to write the generated images and index."),
    device: str = DEVICE_OPT,
) -> None:
    """Generate procedural artists, imitations and photos; index, calibrate, scan and give model verdicts."""
    from mimicry.demo import run_demo

    _setup_logging(True)
    run_demo(out, device=device, echo=typer.echo)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
