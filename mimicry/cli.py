"""The ``mimicry`` command line: a thin face on :class:`mimicry.StyleIndex`.

Exit codes: 0 ok; 1 findings flagged (``scan``); 2 usage or input error, or
nothing at all could be read.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from mimicry.backbones import DEFAULT_MODEL, BackboneError
from mimicry.index import StyleIndex
from mimicry.manifest import IndexMismatchError
from mimicry.portfolio import PortfolioError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Detect imitation of registered artists' styles.")

INDEX_HELP = "Index folder (default: $MIMICRY_INDEX)."
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


def _emit(obj: object) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def index(
    portfolios: Path = typer.Argument(..., help="Folder of artist folders, or a path,artist CSV."),
    index: Optional[Path] = typer.Option(None, "--index", "-i", help=INDEX_HELP),
    model: str = typer.Option(DEFAULT_MODEL, help="default | clip:ARCH/TAG | clip-file:ARCH:PATH"),
    batch_size: int = typer.Option(32, min=1, help="Images per model batch."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Embed portfolios into an index (incremental: unchanged files cost nothing)."""
    _setup_logging(quiet)
    folder = _index_dir(index)
    try:
        with StyleIndex.create(folder, model=model, device=device) as ix:
            report = ix.add_folder(portfolios, batch_size=batch_size, progress=not quiet)
    except USAGE_ERRORS as exc:
        _fail(str(exc).strip("'\""))
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
    index: Optional[Path] = typer.Option(None, "--index", "-i", help=INDEX_HELP),
    top: int = typer.Option(3, min=1, help="Artists to report per image."),
    evidence: int = typer.Option(3, min=1, help="Nearest works to show per artist."),
    batch_size: int = typer.Option(32, min=1),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image, one per line."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Score images against every registered artist, with the nearest works as evidence."""
    _setup_logging(quiet)
    try:
        with StyleIndex.open(_index_dir(index), device=device) as ix:
            results = ix.scan(images, top=top, evidence=evidence, batch_size=batch_size,
                              progress=not quiet)
    except USAGE_ERRORS as exc:
        _fail(str(exc).strip("'\""))
    if not results:
        _fail("no images found in " + ", ".join(map(str, images)))
    for r in results:
        if as_json:
            _emit(r.to_dict())
        elif r.error:
            typer.echo(f"{r.image}\n  error: {r.error}")
        else:
            typer.echo(r.image)
            for m in r.matches:
                near = ", ".join(f"{Path(e.path).name} ({e.similarity:.3f})" for e in m.evidence)
                typer.echo(f"  {m.artist:<28} {m.score:.3f}   nearest: {near}")
    if all(r.error for r in results):
        raise typer.Exit(2)


@app.command()
def info(
    index: Optional[Path] = typer.Option(None, "--index", "-i", help=INDEX_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show the index's model pin, artists and work counts."""
    from dataclasses import asdict

    try:
        with StyleIndex.open(_index_dir(index)) as ix:
            data = asdict(ix.info())
    except USAGE_ERRORS as exc:
        _fail(str(exc).strip("'\""))
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
    index: Optional[Path] = typer.Option(None, "--index", "-i", help=INDEX_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Remove an artist and all their vectors."""
    try:
        with StyleIndex.open(_index_dir(index)) as ix:
            n = ix.remove_artist(artist)
    except USAGE_ERRORS as exc:
        _fail(str(exc).strip("'\""))
    if as_json:
        _emit({"artist": artist, "removed": n})
    else:
        typer.echo(f"removed {artist} ({n} works)")


@app.command()
def evaluate(
    manifest: Path = typer.Argument(..., help="CSV with path, role, artist columns."),
    model: str = typer.Option(DEFAULT_MODEL, help="default | clip:ARCH/TAG | clip-file:ARCH:PATH"),
    out: Optional[Path] = typer.Option(None, help="Folder for metrics.json."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Index a manifest's genuine works, scan the rest, report attribution and detection metrics."""
    from mimicry.evaluate import evaluate as run_evaluate
    from mimicry.evaluate import write_metrics

    try:
        metrics = run_evaluate(manifest, model=model, device=device)
    except USAGE_ERRORS as exc:
        _fail(str(exc).strip("'\""))
    if out is not None:
        write_metrics(metrics, out)
    data = metrics.to_dict()
    if as_json:
        _emit(data)
        return
    for key in ("top1", "top3", "auc", "tpr_at_1pct_fpr"):
        typer.echo(f"{key:<16} {data[key]:.3f}")
    typer.echo(f"genuine {data['n_genuine']}, imitation {data['n_imitation']}, "
               f"negative {data['n_negative']}, skipped {data['n_skipped']}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), help="Where to write the generated images and index."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Generate procedural artists, imitations and photos; index; scan; print the table."""
    from mimicry.demo import run_demo

    _setup_logging(True)
    run_demo(out, device=device, echo=typer.echo)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
