"""The ``mimicry`` command line: a thin face on :class:`mimicry.StyleIndex`
(exit codes: docs, "Exit codes and errors"). ``--json`` prints the API result's
``to_dict()``, one object per line. Heavy modules (torch, FAISS) are imported
inside commands, so ``--help`` stays fast."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional

import typer

from mimicry import __version__
from mimicry.backbones import model_specs
from mimicry.errors import InputError, MimicryError
from mimicry.settings import Settings, get_settings

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.index import StyleIndex

app = typer.Typer(add_completion=False, no_args_is_help=True)  # help: the callback's, main()

DEFAULTS = Settings()  # the documented defaults, shown in --help; the environment is read at run time
MODEL_SPECS = " | ".join(model_specs())  # from the backbone registry

# Options every command spells the same way.
INDEX_OPT = typer.Option(None, "--index", "-i", help="Index folder (default: $MIMICRY_INDEX).")
MODEL_OPT = typer.Option("default", help=MODEL_SPECS)
DEVICE_OPT = typer.Option(None, help="auto | cpu | cuda (default: $MIMICRY_DEVICE or auto).")
RUNTIME_OPT = typer.Option(None, help="auto | torch | onnx: what runs the model, the same vectors (default: $MIMICRY_RUNTIME or auto: ONNX Runtime on the CPU).")
JSON_OPT = typer.Option(False, "--json", help="Print JSON.")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress or info lines.")
VERBOSE_OPT = typer.Option(False, "--verbose", "-v", help="Also other libraries' info lines (FAISS, torch).")
BATCH_OPT = typer.Option(None, min=1, help=f"Images per model batch (default {DEFAULTS.batch_size}).")
REPORT_OPT = typer.Option(None, "--report", help="Also write a self-contained HTML report to this file.")
ENGINE_OPT = typer.Option("local", "--engine", help="local | ray: embed here, or on a Ray cluster (pip install 'mimicry\\[ray]').")
ADDRESS_OPT = typer.Option(None, "--address", help="Ray cluster address for --engine ray (default: start a local one; 'auto': this machine's).")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"mimicry: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[Settings]:
    """The settings; every MimicryError becomes one line on stderr and its exit code."""
    try:
        yield get_settings()
    except MimicryError as exc:
        _fail(str(exc), exc.exit_code)


def _index_dir(index: Optional[Path], settings: Settings) -> Path:
    if (folder := index or settings.index) is None:  # the flag wins over MIMICRY_INDEX
        raise InputError("no index given: pass --index DIR or set MIMICRY_INDEX")
    return folder


@contextmanager
def _opened(index: Optional[Path], device: Optional[str], runtime: Optional[str] = None, verify: bool = True) -> Iterator["StyleIndex"]:
    """The index named by ``--index`` or ``MIMICRY_INDEX``, errors handled, its model on ``device`` and ``runtime``."""
    from mimicry.index import StyleIndex

    with _errors() as s, StyleIndex.open(_index_dir(index, s), device=device or s.device, verify=verify,
                                         runtime=runtime or s.runtime) as ix:
        yield ix


def _emit(obj: object) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


def _print(as_json: bool, kind: str, data: Any) -> None:
    """``data`` (a result, or a dict) as JSON, or as its plain-text rendering ``kind``."""
    _emit(data if isinstance(data, dict) else data.to_dict()) if as_json else _text(kind, data)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (a test runner swaps it)."""
    stream = property(lambda self: sys.stderr, lambda self, _: None)


def _setup_logging(quiet: bool, verbose: bool = False) -> None:
    """Log lines on stderr: the package's from INFO (WARNING with --quiet); other
    libraries' (FAISS's loader...) from WARNING, unless --verbose shows all from INFO."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[_Stderr()],
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("mimicry").setLevel(logging.WARNING if quiet and not verbose else logging.INFO)


def _progress(quiet: bool, command: str) -> Optional[Callable[[str, int, int], None]]:
    """A progress callback on stderr (:func:`mimicry.faces.text.progress`), or None with --quiet."""
    if quiet:
        return None  # a --json --quiet run never loads the text module
    from mimicry.faces.text import progress

    return progress(command)


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"mimicry {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    """Detect imitation of registered artists' styles."""


def _command_line() -> str:  # this command as a shell would take it back: its reports' header
    return shlex.join(["mimicry", *sys.argv[1:]])


def _write_report(path: Optional[Path], kind: str, *results: object) -> None:
    """Writes the HTML report ``kind`` of ``results`` to ``path`` (:func:`mimicry.report.write_named`)."""
    if path is not None:
        from mimicry.report import write_named

        write_named(path, kind, results, _command_line())
        typer.echo(f"report written to {path}", err=True)


def _text(kind: str, *args: object) -> None:
    """Prints the plain-text rendering ``kind`` of :mod:`mimicry.faces.text` (imported only for text)."""
    from mimicry.faces import text

    for line in getattr(text, kind)(*args):
        typer.echo(line)


def _warn(lines: List[str]) -> None:
    for line in lines:
        typer.echo(f"mimicry: warning: {line}", err=True)


@app.command()
def index(
    portfolios: Path = typer.Argument(..., help="Folder of artist folders, or a path,artist CSV."),
    index: Optional[Path] = INDEX_OPT, model: str = MODEL_OPT,
    batch_size: Optional[int] = BATCH_OPT,
    device: Optional[str] = DEVICE_OPT, runtime: Optional[str] = RUNTIME_OPT,
    drop_unreadable: bool = typer.Option(False, "--drop-unreadable", help="When rebuilding an old index, drop works whose file cannot be read."),
    index_type: Optional[str] = typer.Option(None, "--index-type", help="flat | ivf | hnsw | auto (new indexes: auto = exact below 20,000 works, HNSW above). Re-pins an existing index."),
    engine: str = ENGINE_OPT, address: Optional[str] = ADDRESS_OPT,
    as_json: bool = JSON_OPT, quiet: bool = QUIET_OPT, verbose: bool = VERBOSE_OPT,
) -> None:
    """Embed portfolios into an index (incremental: unchanged files cost nothing).
    An index built with an older recipe of the same model is rebuilt first."""
    from mimicry.index import StyleIndex

    _setup_logging(quiet, verbose)
    with _errors() as s, StyleIndex.create(_index_dir(index, s), model=model, device=device or s.device,
                                           runtime=runtime or s.runtime, rebuild=True, drop_unreadable=drop_unreadable,
                                           progress=_progress(quiet, "index"), index_type=index_type) as ix:
        report = ix.add_folder(portfolios, batch_size=batch_size, progress=_progress(quiet, "index"),
                               engine=engine, address=address)
    _print(as_json, "index_report", report)
    for sk in report.skipped if not as_json else []:
        typer.echo(f"skipped {sk.path}: {sk.reason}", err=True)
    _warn(report.warnings)
    if report.works == 0 and report.skipped:
        raise typer.Exit(2)


@app.command(short_help="Score images against every registered artist, with the nearest works as evidence.")
def scan(
    images: List[Path] = typer.Argument(..., help="Image files or folders."),
    index: Optional[Path] = INDEX_OPT,
    top: Optional[int] = typer.Option(None, min=1, help=f"Artists to report per image (default {DEFAULTS.top})."),
    evidence: Optional[int] = typer.Option(None, min=1, help=f"Nearest works to show per artist (default {DEFAULTS.evidence})."),
    batch_size: Optional[int] = BATCH_OPT,
    device: Optional[str] = DEVICE_OPT, runtime: Optional[str] = RUNTIME_OPT,
    report: Optional[Path] = REPORT_OPT,
    engine: str = ENGINE_OPT, address: Optional[str] = ADDRESS_OPT,
    as_json: bool = JSON_OPT, quiet: bool = QUIET_OPT, verbose: bool = VERBOSE_OPT,
) -> None:
    """Score images against every registered artist, with the nearest works as evidence.
    Each artist's `p` is a match p-value: the share of that artist's negatives scoring at
    least as high. It ranks evidence; the flag's rate is the calibration's (--fpr).
    With --json each result is printed as soon as it is ready (one JSON object per line)."""
    _setup_logging(quiet, verbose)
    results = []
    with _opened(index, device, runtime) as ix, _errors():
        for r in ix.iter_scan(images, top=top, evidence=evidence, batch_size=batch_size,
                              progress=_progress(quiet, "scan"), engine=engine, address=address):
            results.append(r)
            if as_json:
                _emit(r.to_dict())
        info = ix.info() if report is not None else None
    if not results:
        _fail("no images found in " + ", ".join(map(str, images)))
    for r in results if not as_json else []:
        _text("scan_result", r)
    _warn(results[0].warnings)
    promise = next((r.promise for r in results if r.promise), None)
    if promise and not promise["certified"] and not as_json:
        from mimicry.faces.text import uncertified

        _warn([uncertified(promise)])
    with _errors():  # after the results are out: a report that cannot be written loses nothing else
        _write_report(report, "scan_report", results, info)
    if all(r.error for r in results):
        raise typer.Exit(2)
    if any(r.artist for r in results):
        raise typer.Exit(1)


@app.command()
def calibrate(
    index: Optional[Path] = INDEX_OPT,
    background: Optional[List[Path]] = typer.Option(None, help="Folder(s) of unrelated images used as extra negatives."),
    fpr: Optional[float] = typer.Option(None, help=f"Target image-level false-flag rate: the share of images by nobody registered flagged as anyone, whatever the number of artists (default {DEFAULTS.fpr}, $MIMICRY_FPR)."),
    from_history: bool = typer.Option(False, "--from-history", help="Background: the service's recorded uploads, grouped by uploader (instead of --background)."),
    device: Optional[str] = DEVICE_OPT, runtime: Optional[str] = RUNTIME_OPT,
    as_json: bool = JSON_OPT, quiet: bool = QUIET_OPT, verbose: bool = VERBOSE_OPT,
) -> None:
    """Calibrate flags so that at most FPR of images by nobody registered are flagged (bring --background, or --from-history)."""
    _setup_logging(quiet, verbose)
    if from_history and background:
        _fail("--from-history and --background: give one")
    with _opened(index, device, runtime, verify=False) as ix:  # calibrate rewrites an unreadable calibration
        if from_history:
            from mimicry.moderation.background import calibrate_index_from_history

            cal, said = calibrate_index_from_history(ix, fpr)
            if not (quiet or as_json):
                typer.echo(said, err=True)
        else:
            cal = ix.calibrate(background=background, fpr=fpr, progress=_progress(quiet, "calibrate"))
    _print(as_json, "calibration", cal)


@app.command("scan-model")
def scan_model(
    samples: List[Path] = typer.Argument(..., help="Folder(s) of images sampled from one model."),
    index: Optional[Path] = INDEX_OPT,
    alpha: Optional[float] = typer.Option(None, help=f"Significance level of the `imitates` tier (default {DEFAULTS.alpha}, $MIMICRY_ALPHA; the `review` tier's is $MIMICRY_REVIEW_ALPHA)."),
    device: Optional[str] = DEVICE_OPT, runtime: Optional[str] = RUNTIME_OPT,
    report: Optional[Path] = REPORT_OPT,
    as_json: bool = JSON_OPT, quiet: bool = QUIET_OPT, verbose: bool = VERBOSE_OPT,
) -> None:
    """Verdict on a fine-tuned model from its samples (8 or more; 16-64 recommended): which artist it imitates, or should be reviewed for. Exit 1 when any artist is at either tier."""
    _setup_logging(quiet, verbose)
    with _opened(index, device, runtime) as ix:
        verdict = ix.scan_model(samples, alpha=alpha, progress=_progress(quiet, "scan-model"))
        info = ix.info() if report is not None else None
    _warn(verdict.warnings)
    _print(as_json, "model_verdict", verdict)
    with _errors():
        _write_report(report, "model_report", verdict, info)
    if verdict.flagged:
        raise typer.Exit(1)


@app.command()
def info(
    index: Optional[Path] = INDEX_OPT,
    as_json: bool = JSON_OPT, verbose: bool = VERBOSE_OPT,
) -> None:
    """Show the index's model pin and recipe, artists, work counts and calibration state."""
    _setup_logging(True, verbose)
    with _opened(index, None) as ix:
        data = ix.info().to_dict()
    _print(as_json, "index_info", data)
    _warn(data["warnings"])


@app.command()
def remove(
    artist: str = typer.Argument(..., help="Artist name as indexed."),
    index: Optional[Path] = INDEX_OPT,
    as_json: bool = JSON_OPT, verbose: bool = VERBOSE_OPT,
) -> None:
    """Remove an artist and all their vectors."""
    _setup_logging(True, verbose)
    with _opened(index, None) as ix:
        n = ix.remove_artist(artist)
    _print(as_json, "removed", {"artist": artist, "removed": n})


@app.command()
def evaluate(
    manifest: List[Path] = typer.Argument(..., help="CSV(s) with path, role, artist (and optional model) columns; several are evaluated as one set."),
    model: str = MODEL_OPT,
    out: Optional[Path] = typer.Option(None, help="Folder for metrics.json, roc.png and report.html."),
    unregistered: int = typer.Option(0, help="Move N artists out of the portfolio; their art becomes negatives."),
    seed: int = typer.Option(0, help="Seed for --unregistered and set sampling."),
    perturb: bool = typer.Option(False, "--perturb", help="Repeat the scan under JPEG, downscale, noise, crop and flip."),
    background: Optional[List[Path]] = typer.Option(None, help="Folder(s) of art by nobody registered: calibrate with half (by sub-folder, seeded), measure background_flagged on the other half."),
    heldout_background: Optional[List[Path]] = typer.Option(None, help="Folder(s) to measure background_flagged on instead of half of --background."),
    fpr: Optional[float] = typer.Option(None, help=f"Target image-level false-flag rate of the calibration; tpr_at_fpr is measured at it (default {DEFAULTS.fpr}, $MIMICRY_FPR)."),
    cache: bool = typer.Option(True, help="Keep embedded vectors in $MIMICRY_HOME/cache, so reruns embed only new files."),
    device: Optional[str] = DEVICE_OPT, runtime: Optional[str] = RUNTIME_OPT,
    as_json: bool = JSON_OPT, quiet: bool = QUIET_OPT, verbose: bool = VERBOSE_OPT,
) -> None:
    """Index the manifests' genuine works, scan the rest, report attribution, detection and model metrics."""
    from mimicry.evaluate import evaluate as run_evaluate

    _setup_logging(quiet, verbose)
    with _errors() as s:
        result = run_evaluate(manifest, model=model, device=device or s.device, runtime=runtime or s.runtime, unregistered=unregistered,
                              seed=seed, perturb=perturb, fpr=s.fpr if fpr is None else fpr,
                              batch_size=s.batch_size, out=out, background=background,
                              heldout_background=heldout_background,
                              cache=s.home / "cache" if cache else None, command=_command_line(),
                              progress=_progress(quiet, "evaluate"))
    _print(as_json, "evaluation", result)


@app.command()
def serve(
    index: Optional[Path] = INDEX_OPT,
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    read_only: bool = typer.Option(False, "--read-only", help="Serve scans and reads only: no registration or uploads."),
    insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth", help="Allow writes with no admin token (loopback only)."),
    device: Optional[str] = DEVICE_OPT, runtime: Optional[str] = RUNTIME_OPT, verbose: bool = VERBOSE_OPT,
) -> None:
    """Serve the HTTP API over an index (OpenAPI at /docs): scans, model verdicts, artists, health."""
    from dataclasses import replace
    from mimicry.faces.http import serve as run_server

    _setup_logging(False, verbose)
    with _errors() as s:
        run_server(_index_dir(index, s), replace(s, device=device or s.device, runtime=runtime or s.runtime), host, port,
                   writes=not read_only, insecure_no_auth=insecure_no_auth)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), help="Where to write the generated images and index."),
    device: Optional[str] = DEVICE_OPT, runtime: Optional[str] = RUNTIME_OPT, verbose: bool = VERBOSE_OPT,
) -> None:
    """Generate procedural artists, imitations and photos; index, calibrate, scan and give model verdicts."""
    from mimicry.demo import run_demo

    _setup_logging(True, verbose)
    with _errors() as s:
        run_demo(out, device=device or s.device, runtime=runtime or s.runtime, echo=typer.echo)


if __name__ == "__main__":  # pragma: no cover
    app()
