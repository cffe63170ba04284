"""The ``mimicry`` command line: a thin face on :class:`mimicry.StyleIndex`.

Exit codes: 0 ok; 1 findings flagged (``scan``, ``scan-model``); 2 usage or
input error (every :class:`~mimicry.errors.MimicryError`), or nothing at all
could be read. ``--json`` prints the API result's ``to_dict()``, one object per
line. Heavy modules (torch, FAISS) are imported inside commands, so ``--help``
stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional

import typer

from mimicry.backbones import model_specs
from mimicry.errors import InputError, MimicryError
from mimicry.settings import Settings, get_settings

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.index import StyleIndex

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Detect imitation of registered artists' styles.")

DEFAULTS = Settings()  # the documented defaults, shown in --help; the environment is read at run time
MODEL_SPECS = " | ".join(model_specs())  # from the backbone registry

# Options every command spells the same way.
INDEX_OPT = typer.Option(None, "--index", "-i", help="Index folder (default: $MIMICRY_INDEX).")
MODEL_OPT = typer.Option("default", help=MODEL_SPECS)
DEVICE_OPT = typer.Option(None, help="auto | cpu | cuda (default: $MIMICRY_DEVICE or auto).")
JSON_OPT = typer.Option(False, "--json", help="Print JSON.")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress bar or info logging.")
BATCH_OPT = typer.Option(None, min=1, help=f"Images per model batch (default {DEFAULTS.batch_size}).")


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
    folder = index or settings.index
    if folder is None:
        raise InputError("no index given: pass --index DIR or set MIMICRY_INDEX")
    return folder


@contextmanager
def _opened(index: Optional[Path], device: Optional[str], verify: bool = True) -> Iterator["StyleIndex"]:
    """The index named by ``--index`` or ``MIMICRY_INDEX``, errors handled."""
    from mimicry.index import StyleIndex

    with _errors() as settings:
        with StyleIndex.open(_index_dir(index, settings), device=device or settings.device,
                             verify=verify) as ix:
            yield ix


def _emit(obj: object) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _progress(quiet: bool) -> Optional[Callable[[str, int, int], None]]:
    """A progress callback drawing one tqdm bar per stage on stderr (a terminal only)."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="img", file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _command() -> str:
    """The command line that is running, as a shell would take it back (for reports)."""
    import shlex

    return shlex.join(["mimicry", *sys.argv[1:]])


REPORT_OPT = typer.Option(None, "--report", help="Also write a self-contained HTML report to this file.")
ENGINE_OPT = typer.Option("local", "--engine", help="local | ray: embed here, or on a Ray cluster (pip install 'mimicry[ray]').")
ADDRESS_OPT = typer.Option(None, "--address", help="Ray cluster address for --engine ray (default: start a local one; 'auto': this machine's).")


def _write_report(path: Optional[Path], render: Callable[[], str]) -> None:
    if path is None:
        return
    from mimicry.report import write_report

    try:
        write_report(render(), path)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the report ({exc.strerror or exc})") from None
    typer.echo(f"report written to {path}", err=True)


def _warn(lines: List[str]) -> None:
    for line in lines:
        typer.echo(f"mimicry: warning: {line}", err=True)


@app.command()
def index(
    portfolios: Path = typer.Argument(..., help="Folder of artist folders, or a path,artist CSV."),
    index: Optional[Path] = INDEX_OPT,
    model: str = MODEL_OPT,
    batch_size: Optional[int] = BATCH_OPT,
    device: Optional[str] = DEVICE_OPT,
    drop_unreadable: bool = typer.Option(False, help="When rebuilding an old index, drop works whose file cannot be read."),
    index_type: Optional[str] = typer.Option(None, "--index-type", help="flat | ivf | hnsw | auto (new indexes: auto = exact below 20,000 works, HNSW above). Re-pins an existing index."),
    engine: str = ENGINE_OPT,
    address: Optional[str] = ADDRESS_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Embed portfolios into an index (incremental: unchanged files cost nothing).
    An index built with an older recipe of the same model is rebuilt first."""
    from mimicry.index import StyleIndex

    _setup_logging(quiet)
    with _errors() as s:
        with StyleIndex.create(_index_dir(index, s), model=model, device=device or s.device,
                               rebuild=True, drop_unreadable=drop_unreadable,
                               progress=_progress(quiet), index_type=index_type) as ix:
            report = ix.add_folder(portfolios, batch_size=batch_size, progress=_progress(quiet),
                                   engine=engine, address=address)
    if as_json:
        _emit(report.to_dict())
    else:
        rebuilt = "rebuilt with the current recipe; " if report.rebuilt else ""
        typer.echo(f"{rebuilt}embedded {report.embedded}, unchanged {report.unchanged}, "
                   f"removed {report.removed}; index holds {report.works} works by {report.artists} "
                   f"artists; skipped {len(report.skipped)}")
        for sk in report.skipped:
            typer.echo(f"skipped {sk.path}: {sk.reason}", err=True)
    _warn(report.warnings)
    if report.works == 0 and report.skipped:
        raise typer.Exit(2)


@app.command()
def scan(
    images: List[Path] = typer.Argument(..., help="Image files or folders."),
    index: Optional[Path] = INDEX_OPT,
    top: Optional[int] = typer.Option(None, min=1, help=f"Artists to report per image (default {DEFAULTS.top})."),
    evidence: Optional[int] = typer.Option(None, min=1, help=f"Nearest works to show per artist (default {DEFAULTS.evidence})."),
    batch_size: Optional[int] = BATCH_OPT,
    device: Optional[str] = DEVICE_OPT,
    report: Optional[Path] = REPORT_OPT,
    engine: str = ENGINE_OPT,
    address: Optional[str] = ADDRESS_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Score images against every registered artist, with the nearest works as evidence.
    With --json each result is printed as soon as it is ready (one JSON object per line)."""
    from mimicry.report import scan_report

    _setup_logging(quiet)
    results = []
    with _opened(index, device) as ix, _errors():
        for r in ix.iter_scan(images, top=top, evidence=evidence, batch_size=batch_size,
                              progress=_progress(quiet), engine=engine, address=address):
            results.append(r)
            if as_json:
                _emit(r.to_dict())
        info = ix.info()
    if not results:
        _fail("no images found in " + ", ".join(map(str, images)))
    for r in results:
        if as_json:
            continue
        elif r.error:
            typer.echo(f"{r.image}\n  error: {r.error}")
        else:
            verdict = (f"   FLAGGED: imitates {r.artist} (image p-value {r.image_p_value:.4f})"
                       if r.artist else "")
            typer.echo(f"{r.image}{verdict}")
            for m in r.matches:
                near = ", ".join(f"{Path(e.path).name} ({e.similarity:.3f})" for e in m.evidence)
                flag = "" if m.flagged is None else (f"  flag fpr {m.fpr:.3f}" if m.flagged else f"  fpr {m.fpr:.3f}")
                typer.echo(f"  {m.artist:<28} {m.score:.3f}{flag}   nearest: {near}")
    _warn(results[0].warnings if results else [])
    promise = next((r.promise for r in results if r.promise), None)
    if promise and not promise["certified"] and not as_json:
        _warn([f"flags rest on {promise['negatives']} {promise['source']} images: the {promise['fpr']:.1%} "
               f"rate is not certified (calibrate with at least {promise['needed']} background images)"])
    with _errors():  # after the results are out: a report that cannot be written loses nothing else
        _write_report(report, lambda: scan_report(results, info, _command()))
    if all(r.error for r in results):
        raise typer.Exit(2)
    if any(r.artist for r in results):
        raise typer.Exit(1)


@app.command()
def calibrate(
    index: Optional[Path] = INDEX_OPT,
    background: Optional[List[Path]] = typer.Option(None, help="Folder(s) of unrelated images used as extra negatives."),
    fpr: Optional[float] = typer.Option(None, help=f"Target image-level false-flag rate: the share of images by nobody registered flagged as anyone, whatever the number of artists (default {DEFAULTS.fpr}, $MIMICRY_FPR)."),
    device: Optional[str] = DEVICE_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Calibrate flags so that at most FPR of images by nobody registered are flagged (bring --background)."""
    _setup_logging(quiet)
    with _opened(index, device, verify=False) as ix:  # calibrate rewrites an unreadable calibration
        cal = ix.calibrate(background=background, fpr=fpr, progress=_progress(quiet))
    data = cal.to_dict()
    if as_json:
        _emit(data)
        return
    promise = data["promise"]
    state = "certified" if promise["certified"] else f"NOT certified: bring at least {promise['needed']} background images"
    typer.echo(f"calibrated {len(cal.artists)} artists: at most {cal.fpr:.1%} of images by nobody registered "
               f"are flagged ({promise['negatives']} {promise['source']} images; {state})")
    for a, d in data["artists"].items():
        typer.echo(f"  {a:<28} negatives {d['negatives']}  hubness {d['hubness']:.3f}")


@app.command("scan-model")
def scan_model(
    samples: List[Path] = typer.Argument(..., help="Folder(s) of images sampled from one model."),
    index: Optional[Path] = INDEX_OPT,
    alpha: Optional[float] = typer.Option(None, help=f"Significance level of the verdict (default {DEFAULTS.alpha}, $MIMICRY_ALPHA)."),
    device: Optional[str] = DEVICE_OPT,
    report: Optional[Path] = REPORT_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Verdict on a fine-tuned model from 8-200 of its samples: which artist, if any, it imitates."""
    from mimicry.report import model_report

    _setup_logging(quiet)
    with _opened(index, device) as ix:
        verdict = ix.scan_model(samples, alpha=alpha, progress=_progress(quiet))
        info = ix.info()
    _warn(verdict.warnings)
    if as_json:
        _emit(verdict.to_dict())
    else:
        who = ", ".join(verdict.artists) or "no registered artist"
        typer.echo(f"{verdict.n_samples} samples: imitates {who} (alpha {verdict.alpha})")
        for f in verdict.findings:
            typer.echo(f"  {f.artist:<28} p={f.p_value:.2e}  {f.supporting}/{verdict.n_samples} samples "
                       f"at fpr <= {f.level:.0%} ({f.flagged} flagged)  "
                       f"nearest works: {', '.join(Path(w.path).name for w in f.nearest_works)}")
    with _errors():
        _write_report(report, lambda: model_report(verdict, info, _command()))
    if verdict.artists:
        raise typer.Exit(1)


@app.command()
def info(
    index: Optional[Path] = INDEX_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show the index's model pin and recipe, artists, work counts and calibration state."""
    with _opened(index, None) as ix:
        data = ix.info().to_dict()
    if as_json:
        _emit(data)
        return
    cal = data["calibration"]
    if data["promise"] is not None:
        p = data["promise"]
        cal += (f" (fpr {p['fpr']} per image, {p['negatives']} {p['source']} images, "
                f"{'certified' if p['certified'] else 'not certified'})")
    recipe = data["recipe"]
    typer.echo(f"index       {data['path']}\nbackbone    {data['backbone_id']} ({data['model_spec']})\n"
               f"weights     sha256 {data['weights_sha256']}\n"
               f"recipe      v{recipe.get('version')}: {recipe.get('descriptor')}\n"
               f"dimension   {data['dim']}\n"
               f"search      {_search_line(data['index'])}\ncalibration {cal}\n"
               f"works       {data['works']} by {len(data['artists'])} artists")
    for name, n in data["artists"].items():
        typer.echo(f"  {name:<28} {n}")
    _warn(data["warnings"])


def _search_line(index: dict) -> str:
    infos = index.get("infos")
    line = f"{index['in_use']} (pinned: {index['type']})"
    if infos:
        setting = ", ".join(f"{k} {v}" for k, v in infos["search"].items())
        line += (f", {infos['vectors']} works indexed, {setting}, recall@10 {infos['recall_at_10']:.3f}, "
                 f"{infos['memory_bytes'] / 2**20:.1f} MiB")
    return line


@app.command()
def remove(
    artist: str = typer.Argument(..., help="Artist name as indexed."),
    index: Optional[Path] = INDEX_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Remove an artist and all their vectors."""
    with _opened(index, None) as ix:
        n = ix.remove_artist(artist)
    if as_json:
        _emit({"artist": artist, "removed": n})
    else:
        typer.echo(f"removed {artist} ({n} works)")


@app.command()
def evaluate(
    manifest: Path = typer.Argument(..., help="CSV with path, role, artist columns."),
    model: str = MODEL_OPT,
    out: Optional[Path] = typer.Option(None, help="Folder for metrics.json, roc.png and report.html."),
    unregistered: int = typer.Option(0, help="Move N artists out of the portfolio; their art becomes negatives."),
    seed: int = typer.Option(0, help="Seed for --unregistered and set sampling."),
    perturb: bool = typer.Option(False, help="Repeat the scan under JPEG, downscale, noise, crop and flip."),
    background: Optional[List[Path]] = typer.Option(None, help="Folder(s) of art by nobody registered: calibrate with half (by sub-folder, seeded), measure background_flagged on the other half."),
    heldout_background: Optional[List[Path]] = typer.Option(None, help="Folder(s) to measure background_flagged on instead of half of --background."),
    fpr: Optional[float] = typer.Option(None, help=f"Target image-level false-flag rate of the calibration; tpr_at_fpr is measured at it (default {DEFAULTS.fpr}, $MIMICRY_FPR)."),
    cache: bool = typer.Option(True, help="Keep embedded vectors in $MIMICRY_HOME/cache, so reruns embed only new files."),
    device: Optional[str] = DEVICE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Index a manifest's genuine works, scan the rest, report attribution and detection metrics."""
    from mimicry.evaluate import evaluate as run_evaluate

    with _errors() as s:
        result = run_evaluate(manifest, model=model, device=device or s.device, unregistered=unregistered,
                              seed=seed, perturb=perturb, fpr=s.fpr if fpr is None else fpr,
                              batch_size=s.batch_size, out=out, background=background,
                              heldout_background=heldout_background,
                              cache=s.home / "cache" if cache else None, command=_command())
    if as_json:
        _emit(result.to_dict())
        return
    names = list(result.perturbations)
    typer.echo(f"{'metric':<30} {'clean':>7} " + " ".join(f"{p:>14}" for p in names))
    for key, clean, per in result.table():
        typer.echo(f"{key:<30} {clean:>7.3f} " + " ".join(f"{per[p]:>14.3f}" for p in names))
    typer.echo(f"genuine {result.n_genuine}, imitation {result.n_imitation}, "
               f"negative {result.n_negative}, skipped {len(result.skipped)}")


@app.command()
def serve(
    index: Optional[Path] = INDEX_OPT,
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    read_only: bool = typer.Option(False, help="Serve scans and reads only: no registration or uploads."),
    insecure_no_auth: bool = typer.Option(False, help="Allow writes with no admin token (loopback only)."),
    device: Optional[str] = DEVICE_OPT,
) -> None:
    """Serve the HTTP API over an index (OpenAPI at /docs): scans, model verdicts, artists, health."""
    from dataclasses import replace

    import uvicorn

    from mimicry.faces.http import create_app

    _setup_logging(False)
    with _errors() as s:
        folder = _index_dir(index, s)
        if insecure_no_auth and host not in ("127.0.0.1", "localhost", "::1"):
            raise InputError(f"--insecure-no-auth serves loopback only, not {host}")
        # One core per model call, as many calls at once as cores: measured 28.4
        # against 20.4 images/s at 16 concurrent requests on 2 cores, where every
        # call spreading over both cores contends with the others (README).
        import torch

        torch.set_num_threads(1)
        # The app opens the folder itself: one handle, one copy of the vectors in memory.
        app_ = create_app(folder, replace(s, device=device or s.device), writes=not read_only,
                          insecure_no_auth=insecure_no_auth)
        uvicorn.run(app_, host=host, port=port, log_level="info")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), help="Where to write the generated images and index."),
    device: Optional[str] = DEVICE_OPT,
) -> None:
    """Generate procedural artists, imitations and photos; index, calibrate, scan and give model verdicts."""
    from mimicry.demo import run_demo

    _setup_logging(True)
    with _errors() as s:
        run_demo(out, device=device or s.device, echo=typer.echo)


if __name__ == "__main__":  # pragma: no cover
    app()
