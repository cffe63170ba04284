"""What the command line prints when ``--json`` is not given: the API's
results as plain lines, one function per kind of result. No logic of its own:
every figure comes from the result as ``to_dict()`` holds it. Imported only
when text or progress bars are printed: a ``--json`` run off a terminal never loads it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mimicry.results import p_text, percent_text, runtimes_text

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.evaluate import Evaluation
    from mimicry.flagging import Calibration
    from mimicry.results import IndexReport, ModelVerdict, ScanResult


def index_report(report: IndexReport) -> list[str]:
    """What ``mimicry index`` did (the CLI prints each skipped file on stderr)."""
    rebuilt = "rebuilt with the current recipe; " if report.rebuilt else ""
    return [f"{rebuilt}embedded {report.embedded}, unchanged {report.unchanged}, removed {report.removed}; "
            f"index holds {report.works} works by {report.artists} artists; skipped {len(report.skipped)}"]


def scan_result(r: ScanResult) -> list[str]:
    """One image: its verdict (:meth:`~mimicry.results.ScanResult.verdict_words`),
    then each reported artist with score, rate and nearest works."""
    if r.error:
        return [f"{r.image}", f"  error: {r.error}"]
    lines = [f"{r.image}   {r.verdict_words()[1]}"]
    for m in r.matches:
        near = ", ".join(f"{Path(e.path).name} ({e.similarity:.3f})" for e in m.evidence)
        flag = "" if m.flagged is None else f"  {'flag ' if m.flagged else ''}p {p_text(m.fpr)}"
        lines.append(f"  {m.artist:<28} {m.score:.3f}{flag}   nearest: {near}")
    return lines


def removed(data: dict[str, Any]) -> list[str]:
    """What ``mimicry remove`` did."""
    return [f"removed {data['artist']} ({data['removed']} works)"]


def uncertified(promise: dict[str, Any]) -> str:
    """The warning for flags whose rate is not certified."""
    return (f"flags rest on {promise['negatives']} {promise['source']} images: the "
            f"{percent_text(promise['fpr'])} rate is not certified (calibrate with at least {promise['needed']} background images)")


def calibration(cal: Calibration) -> list[str]:
    """What ``mimicry calibrate`` fitted, and what its promise rests on."""
    data = cal.to_dict()
    promise = data["promise"]
    state = ("certified" if promise["certified"]
             else f"NOT certified: bring at least {promise['needed']} background images")
    lines = [f"calibrated {len(cal.artists)} artists at {data['calibrated_at']}: at most {percent_text(cal.fpr)} of "
             f"images by nobody registered are flagged ({promise['negatives']} {promise['source']} images; {state})"]
    lines += [f"  {a:<28} negatives {d['negatives']}  hubness {d['hubness']:.3f}"
              for a, d in data["artists"].items()]
    return lines


def model_verdict(verdict: ModelVerdict) -> list[str]:
    """The verdict at each tier, then every artist shown, strongest first."""
    n = verdict.n_samples
    if verdict.artists:
        head = f"{n} samples: imitates {', '.join(verdict.artists)} (alpha {verdict.alpha:g})"
    elif verdict.review:
        head = f"{n} samples: review for {', '.join(verdict.review)} (alpha {verdict.review_alpha:g})"
    else:
        near = ", ".join(f"{a} {c}" for a, c in sorted(verdict.nearest.items(), key=lambda x: -x[1])[:3])
        head = (f"{n} samples: not flagged at either tier (not cleared: no test found enough evidence); "
                f"samples nearest each artist: {near}")
    lines = [head] + [f"  tier {name}: {_tier_line(t)}" for name, t in verdict.tiers.items()]
    for f in verdict.findings:
        tiers = "  ".join(f"{k}={p_text(v)}" for k, v in f.p_tiers.items())
        makers = "" if f.p_makers is None else f"  makers p={p_text(f.p_makers)}"
        lines.append(f"  {f.artist:<28} {f.tier or '-':<8} {tiers}  images p={p_text(f.p_value)}{makers}  "
                     f"nearest to {f.nearest_samples}/{n} samples, {f.supporting} at fpr <= {percent_text(f.level)} "
                     f"({f.flagged} flagged)  "
                     f"nearest works: {', '.join(Path(w.path).name for w in f.nearest_works)}")
    return lines


def _tier_line(t: dict[str, Any]) -> str:
    """One tier of a model verdict: its alpha and what backs it."""
    if not t["resolvable"]:
        return f"alpha {t['alpha']:g}, cannot fire ({t['makers']} background makers)"
    return (f"alpha {t['alpha']:g}, {t['rule']}, {t['makers']} background makers"
            f"{'' if t['certified'] else ' (not certified)'}")



def index_info(data: dict[str, Any]) -> list[str]:
    """``mimicry info`` from :meth:`mimicry.results.IndexInfo.to_dict`."""
    cal = data["calibration"] + (f" at {data['calibrated_at']}" if data.get("calibrated_at") else "")
    if data["promise"] is not None:
        p = data["promise"]
        cal += (f" (fpr {p['fpr']} per image, {p['negatives']} {p['source']} images, "
                f"{'certified' if p['certified'] else 'not certified'})")
    recipe = data["recipe"]
    lines = [f"index       {data['path']}", f"backbone    {data['backbone_id']} ({data['model_spec']})",
             f"weights     sha256 {data['weights_sha256']}",
             f"recipe      v{recipe.get('version')}: {recipe.get('descriptor')}",
             f"runtime     {runtimes_text(data['runtimes'], data['background_runtime'])}",
             f"dimension   {data['dim']}", f"search      {_search_line(data['index'])}",
             f"calibration {cal}", f"works       {data['works']} by {len(data['artists'])} artists"]
    return lines + [f"  {name:<28} {n}" for name, n in data["artists"].items()]


def _search_line(index: dict) -> str:
    infos = index.get("infos")
    line = f"{index['in_use']} (pinned: {index['type']})"
    if infos:
        setting = ", ".join(f"{k} {v}" for k, v in infos["search"].items())
        line += (f", {infos['vectors']} works indexed, {setting}, recall@10 {infos['recall_at_10']:.3f}, "
                 f"{infos['memory_bytes'] / 2**20:.1f} MiB")
    return line


def evaluation(result: Evaluation) -> list[str]:
    """The metrics table (clean, then each perturbation) and the counts."""
    names = list(result.perturbations)
    lines = [f"{'metric':<30} {'clean':>7} " + " ".join(f"{p:>14}" for p in names)]
    lines += [f"{key:<30} {clean:>7.3f} " + " ".join(f"{per[p]:>14.3f}" for p in names)
              for key, clean, per in result.table()]
    lines += [f"genuine {result.n_genuine}, imitation {result.n_imitation}, "
              f"negative {result.n_negative}, skipped {len(result.skipped)}"]
    for name, m in result.models.items():
        sizes = [f"{n}: imitates {m[n]['imitates']:.2f}, or review {m[n]['imitates_or_review']:.2f}"
                 for n in m if n.isdigit()]
        skipped = f" (too few for {', '.join(map(str, m['skipped_sizes']))})" if m["skipped_sizes"] else ""
        lines.append(f"model {name} ({m['pool']} samples, {m['artist'] or 'imitating nobody'}): "
                     f"{'; '.join(sizes) or 'no set size fits'}{skipped}")
    if result.makers.get("sets"):
        mk = result.makers
        lines.append(f"held-out makers ({mk['sets']} sets): imitates {mk['imitates']:.3f}, "
                     f"either tier {mk['review']:.3f}")
    return lines


def progress(command: str) -> Callable[[str, int, int], None]:
    """The CLI's progress callback: bars on a terminal, else :func:`progress_lines`."""
    return progress_bars() if sys.stderr.isatty() else progress_lines(command)


def progress_bars() -> Callable[[str, int, int], None]:
    """A progress callback drawing one tqdm bar per stage on stderr."""
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


#: Seconds between two progress lines off a terminal (tests set it lower).
PROGRESS_EVERY = 10.0


def progress_lines(command: str = "", every: float | None = None, clock: Callable[[], float] = time.monotonic,
                   ) -> Callable[[str, int, int], None]:
    """A progress callback for a stderr that is not a terminal (a log, CI): one
    line per stage at most every ``every`` seconds (:data:`PROGRESS_EVERY`),
    ``mimicry: calibrate background 1200/4558 (38 img/s)``, and one with the
    count, time and rate when the stage ends."""
    every = PROGRESS_EVERY if every is None else every
    since = clock()  # when the next stage starts: the last one's end
    stages: dict[str, list[float]] = {}  # stage: [started, last line]

    def update(stage: str, done: int, total: int) -> None:
        nonlocal since
        now = clock()
        started, last = stages.setdefault(stage, [since, since])
        if done < total and now - last < every:
            return
        took = now - started
        rate = "-" if took <= 0 else f"{done / took:.0f}" if done >= 10 * took else f"{done / took:.2g}"
        end = f" in {took:.1f} s" if done >= total else ""
        print(f"mimicry: {command + ' ' if command else ''}{stage} {done}/{total}{end} ({rate} img/s)", file=sys.stderr, flush=True)
        stages[stage][1] = now
        if done >= total:  # a stage of the same name later starts afresh
            since = now
            del stages[stage]

    return update
