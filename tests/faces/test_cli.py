"""The CLI, in-process through typer's runner (one real subprocess smoke test):
a thin face that prints the API's ``to_dict()`` and maps errors to exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import pin_older_recipe, write_manifest
from mimicry.backbones import runtime_label
from mimicry.faces.cli import app
from mimicry.synthetic import STYLES, paint, scene


@pytest.fixture
def cli(default_embedder, monkeypatch):
    """Runs ``mimicry ARGS`` in-process; the default model is built once per session."""
    import mimicry.backbones as backbones

    real = backbones.load_embedder
    monkeypatch.setattr(backbones, "load_embedder",
                        lambda spec="default", device="auto", runtime=None: default_embedder
                        if spec in ("default", "efficientnet-lite0")
                        and backbones.resolve_runtime(runtime, "cpu") == "onnx" else real(spec, device, runtime))
    import mimicry.evaluate as evaluate_mod
    import mimicry.index as index_mod

    monkeypatch.setattr(index_mod, "load_embedder", backbones.load_embedder)
    monkeypatch.setattr(evaluate_mod, "load_embedder", backbones.load_embedder)
    runner = CliRunner()

    def run(*args: str, env: dict | None = None):
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return run


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_index_scan_info_remove(tmp_path, cli, portfolio_of):
    portfolio = portfolio_of(tmp_path / "p", artists=3, works=3)
    ix = str(tmp_path / "ix")
    r = cli("index", str(portfolio), "--index", ix, "--json", "--quiet")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["embedded"], out["artists"], out["works"], out["skipped"]) == (9, 3, 9, [])
    assert set(out) == {"embedded", "unchanged", "removed", "artists", "works", "skipped", "rebuilt", "warnings"}
    assert json.loads(cli("index", str(portfolio), "--index", ix, "--json", "-q").stdout)["unchanged"] == 9

    target = STYLES[1]
    (portfolio / target.name / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = json.loads(cli("index", str(portfolio), "--json", "-q", env={"MIMICRY_INDEX": ix}).stdout)
    assert out["skipped"][0]["path"].endswith("corrupt.png") and out["skipped"][0]["reason"]

    queries = tmp_path / "q"
    queries.mkdir()
    paint(scene(9001), target, 9002).save(queries / "suspect.png")
    (queries / "unreadable.jpg").write_bytes(b"nope")
    r = cli("scan", str(queries), "--index", ix, "--json", "-q", "--top", "2")
    assert r.exit_code == 0  # uncalibrated: nothing is flagged
    by_name = {Path(d["image"]).name: d for d in lines(r.stdout)}
    suspect = by_name["suspect.png"]
    assert suspect["matches"][0]["artist"] == target.name and len(suspect["matches"]) == 2
    ev = suspect["matches"][0]["evidence"][0]
    assert {"work_id", "artist", "sha256", "similarity", "path"} <= set(ev) and ev["artist"] == target.name
    assert by_name["unreadable.jpg"]["matches"] == [] and by_name["unreadable.jpg"]["error"]
    assert all(any(w.startswith("index not calibrated: similarities only") for w in d["warnings"])
               for d in lines(r.stdout))  # every result, the unreadable one too
    r = cli("scan", str(queries / "suspect.png"), "--index", ix)
    assert target.name in r.stdout and "nearest:" in r.stdout
    assert r.stdout.splitlines()[0].endswith("   Not calibrated: similarities only")
    assert "index not calibrated: similarities only" in r.stderr
    # Either runtime scans the index (the same vectors); an unknown one is refused.
    runs = [lines(cli("scan", str(queries / "suspect.png"), "--index", ix, "--json", "-q", *extra).stdout)[0]
            for extra in ((), ("--runtime", "torch"))]
    sims = [run["matches"][0]["evidence"][0]["similarity"] for run in runs]
    assert abs(sims[0] - sims[1]) < 1e-4 and runs[0]["matches"][0]["artist"] == runs[1]["matches"][0]["artist"]
    r = cli("scan", str(queries / "suspect.png"), "--index", ix, "--runtime", "tensorrt")
    assert r.exit_code == 2 and "unknown runtime 'tensorrt'" in r.stderr

    info = json.loads(cli("info", "--index", ix, "--json").stdout)
    assert info["runtimes"] == {runtime_label("onnx", "cpu"): 9}
    assert info["backbone_id"] == "efficientnet-lite0" and info["works"] == 9
    assert info["calibration"] == "uncalibrated" and info["recipe"]["version"] >= 1
    assert "recipe" in cli("info", "--index", ix).stdout
    assert f"runtime     {runtime_label('onnx', 'cpu')} (9 works)" in cli("info", "--index", ix).stdout

    assert cli("remove", target.name, "--index", ix).exit_code == 0
    assert target.name not in json.loads(cli("info", "--index", ix, "--json").stdout)["artists"]


def test_errors_become_one_line_and_exit_2(tmp_path, cli, portfolio_of):
    r = cli("scan", str(tmp_path), "--index", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "not a mimicry index" in r.stderr
    r = cli("index", str(tmp_path / "nowhere"), "--index", str(tmp_path / "ix"))
    assert r.exit_code == 2 and "no such file" in r.stderr
    r = cli("scan", str(tmp_path / "x.png"), env={"MIMICRY_INDEX": ""})
    assert r.exit_code == 2 and "MIMICRY_INDEX" in r.stderr
    portfolio_of(tmp_path / "p", artists=2, works=1)
    assert cli("index", str(tmp_path / "p"), "--index", str(tmp_path / "ix"), "-q").exit_code == 0
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    r = cli("scan", str(bad), "--index", str(tmp_path / "ix"), "--json")
    assert r.exit_code == 2 and json.loads(r.stdout)["error"]  # nothing at all could be read
    r = cli("remove", "nobody", "--index", str(tmp_path / "ix"))
    assert r.exit_code == 2 and "no artist 'nobody'" in r.stderr
    r = cli("scan-model", str(tmp_path / "p"), "--index", str(tmp_path / "ix"))
    assert r.exit_code == 2 and "mimicry calibrate" in r.stderr
    r = cli("calibrate", "--index", str(tmp_path / "ix"), "--fpr", "2")
    assert r.exit_code == 2 and "between 0 and 1" in r.stderr
    r = cli("scan", str(bad), "--index", str(tmp_path / "ix"), env={"MIMICRY_FPR": "lots"})
    assert r.exit_code == 2 and "MIMICRY_FPR" in r.stderr


def test_calibrated_scan_and_scan_model_exit_1_on_findings(calibrated_copy, demo, cli):
    res, _, out = demo
    ix = str(calibrated_copy)
    target = res.fine_tuned_artist
    r = cli("scan", str(out / "imitations" / f"imitation-of-{target}-1.png"), "--index", ix, "--json", "-q")
    assert r.exit_code == 1 and json.loads(r.stdout)["artist"] == target
    r = cli("scan", str(out / "unrelated"), "--index", ix, "--json", "-q")
    assert r.exit_code == 0 and all(d["artist"] is None for d in lines(r.stdout))

    r = cli("scan-model", str(out / "samples-fine-tune"), "--index", ix, "--json", "-q")
    assert r.exit_code == 1
    verdict = json.loads(r.stdout)
    assert verdict == res.fine_tune.to_dict() | {"findings": verdict["findings"]}
    top = verdict["findings"][0]
    assert top["artist"] == target and top["supporting"] == len(top["samples"]) == len(top["pairs"])
    assert top["nearest_works"][0]["artist"] == target
    r = cli("scan-model", str(out / "samples-unrelated"), "--index", ix, "-q")
    assert r.exit_code == 0 and "not flagged at either tier" in r.stdout

    r = cli("calibrate", "--index", ix, "--json", "-q", "--fpr", "0.05")
    cal = json.loads(r.stdout)
    assert r.exit_code == 0 and cal["fpr"] == 0.05 and cal["n_background"] == 120
    assert set(cal["artists"]) == {s.name for s in STYLES} and cal["promise"]["needed"] == 60
    r = cli("calibrate", "--index", ix, "-q", "--fpr", "0.03")
    assert "at most 3.0% of images by nobody registered" in r.stdout and "; certified)" in r.stdout
    assert "(fpr 0.03 per image, 120 background images, certified)" in cli("info", "--index", ix).stdout


def test_scan_text_says_what_each_image_verdict_rests_on(calibrated_copy, demo, cli, tmp_path):
    """The text names the verdict in the report's words: flagged, not flagged
    (with the nearest artist), and, on a 10-image background that cannot
    reach 1%, why nothing is flagged, with a warning in every JSON result."""
    import shutil

    from mimicry.results import p_text

    res, _, out = demo
    ix, target = str(calibrated_copy), res.fine_tuned_artist
    images = [str(out / "imitations" / f"imitation-of-{target}-0.png"), str(out / "unrelated" / "photo-00.png")]
    flagged, clear = lines(cli("scan", *images, "--index", ix, "--json", "-q").stdout)
    head = [line for line in cli("scan", *images, "--index", ix, "-q").stdout.splitlines() if line.startswith("/")]
    assert flagged["artist"] == target and clear["artist"] is None
    assert head[0].endswith(f"   FLAGGED: imitates {target} (image p-value {p_text(flagged['image_p_value'], 120)})")
    best = clear["matches"][0]
    assert head[1].endswith(f"   Not flagged at 1.0%. Nearest: {best['artist']} (similarity {best['score']:.3f}, "
                            f"image p-value {p_text(clear['image_p_value'], 120)})")
    assert "No known artist" not in "\n".join(head) and " 0.0000" not in "\n".join(head)

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    for p in sorted((out / "background").rglob("*.png"))[:10]:
        shutil.copy2(p, tiny / p.name)
    assert cli("calibrate", "--index", ix, "--background", str(tiny), "-q").exit_code == 0
    r = cli("scan", *images, "--index", ix, "-q")
    assert r.exit_code == 0  # nothing can be flagged
    head = [line for line in r.stdout.splitlines() if line.startswith("/")]
    assert len(head) == 2 and all(h.endswith("   Cannot flag: 10 background images, needs at least 99") for h in head)
    warning = "cannot flag: 10 background images, needs at least 99 to flag at 1.0%"
    assert warning in r.stderr
    results = lines(cli("scan", *images, "--index", ix, "--json", "-q").stdout)
    assert len(results) == 2 and all(any(w.startswith(warning) for w in d["warnings"]) for d in results)


def test_index_rebuilds_an_index_of_an_older_recipe(tmp_path, cli, portfolio_of):
    portfolio = portfolio_of(tmp_path / "p", artists=2, works=2)
    ix = str(tmp_path / "ix")
    assert cli("index", str(portfolio), "--index", ix, "-q").exit_code == 0
    pin_older_recipe(tmp_path / "ix")
    r = cli("scan", str(portfolio), "--index", ix)
    assert r.exit_code == 2 and "re-index" in r.stderr
    r = cli("index", str(portfolio), "--index", ix, "-q")
    assert r.exit_code == 0 and "rebuilt with the current recipe" in r.stdout
    assert cli("scan", str(portfolio), "--index", ix, "-q").exit_code == 0


@pytest.mark.slow  # starts the console script and `python -m mimicry` as processes
def test_installed_command_runs_in_a_real_process(tmp_path):
    """The console script as a user runs it: help, and the package's entry point."""
    exe = Path(sys.executable).with_name("mimicry")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "scan-model" in r.stdout and "evaluate" in r.stdout
    r = subprocess.run([sys.executable, "-m", "mimicry", "info", "--index", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "MIMICRY_INDEX": ""})
    assert r.returncode == 2 and "not a mimicry index" in r.stderr
    r = subprocess.run([sys.executable, "-c", "import mimicry.faces.cli, sys; "
                        "print(sorted(m for m in ('torch', 'faiss') if m in sys.modules))"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]"  # --help never pays for torch or FAISS


def test_evaluate_prints_the_table_and_json(tmp_path, cli, demo_set):
    data = demo_set  # 4 artists x 6 works, 3 imitations of each, 6 photos
    write_manifest(tmp_path / "m.csv", data.portfolios, data.imitations, data.unrelated, data.truth)
    r = cli("evaluate", str(tmp_path / "m.csv"))
    assert r.exit_code == 0 and "top1" in r.stdout and "genuine 24, imitation 12, negative 6" in r.stdout
    d = json.loads(cli("evaluate", str(tmp_path / "m.csv"), "--json", "--out", str(tmp_path / "out")).stdout)
    assert d["n_genuine"] == 24 and "roc" not in d and "scores" not in d
    assert "<th scope=\"row\">top1</th>" in (tmp_path / "out" / "report.html").read_text()
    r = cli("evaluate", str(tmp_path / "nowhere.csv"))
    assert r.exit_code == 2 and "cannot read the manifest" in r.stderr


def test_reports_from_scan_scan_model_and_evaluate(calibrated_copy, demo, cli, tmp_path, monkeypatch):
    """``--report`` writes the HTML report headed by the command that made it;
    one that cannot be written exits 2 naming the file, after the results."""
    res, _, out = demo
    ix = str(calibrated_copy)
    target = res.fine_tuned_artist
    image = str(out / "imitations" / f"imitation-of-{target}-1.png")
    argv = ["mimicry", "scan", image, "--index", ix, "--report", str(tmp_path / "scan.html")]
    monkeypatch.setattr(sys, "argv", argv)
    r = cli(*argv[1:])
    html = (tmp_path / "scan.html").read_text()
    assert r.exit_code == 1 and f"Flagged as <strong>{target}</strong>" in html
    assert f"mimicry scan {image} --index {ix} --report" in html

    r = cli("scan-model", str(out / "samples-fine-tune"), "--index", ix, "--report", str(tmp_path / "m.html"))
    assert r.exit_code == 1 and f"Imitates <strong>{target}</strong>" in (tmp_path / "m.html").read_text()

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    r = cli("scan", image, "--index", ix, "--json", "-q", "--report", str(blocked / "r.html"))
    assert r.exit_code == 2 and json.loads(r.stdout)["artist"] == target  # the result still printed
    assert f"{blocked / 'r.html'}: cannot write the report" in r.stderr


def test_index_type_is_pinned_and_shown(tmp_path, cli, portfolio_of):
    portfolio = portfolio_of(tmp_path / "p", artists=2, works=2)
    ix = str(tmp_path / "ix")
    assert cli("index", str(portfolio), "--index", ix, "-q").exit_code == 0
    info = json.loads(cli("info", "--index", ix, "--json").stdout)
    assert info["index"] == {"type": "auto", "in_use": "flat", "infos": None}  # small: exact
    assert cli("index", str(portfolio), "--index", ix, "-q", "--index-type", "hnsw").exit_code == 0
    assert json.loads(cli("info", "--index", ix, "--json").stdout)["index"]["type"] == "hnsw"
    assert "search      flat (pinned: hnsw)" in cli("info", "--index", ix).stdout
    r = cli("index", str(portfolio), "--index", ix, "--index-type", "kd-tree")
    assert r.exit_code == 2 and "--index-type 'kd-tree'" in r.stderr


def test_progress_lines_off_a_terminal_and_none_with_quiet(tmp_path, cli, portfolio_of, monkeypatch):
    """Off a terminal (a log, CI) a long command prints a progress line every
    ``PROGRESS_EVERY`` seconds (0 here) and the count and rate at each stage's end."""
    import re

    import mimicry.faces.text as text

    monkeypatch.setattr(text, "PROGRESS_EVERY", 0.0)
    portfolio, ix = portfolio_of(tmp_path / "p", artists=3, works=3), str(tmp_path / "ix")
    r = cli("index", str(portfolio), "--index", ix, "--batch-size", "2", "--json")
    progress = [line for line in r.stderr.splitlines() if line.startswith("mimicry: index indexing ")]
    assert len(progress) >= 2 and json.loads(r.stdout)["works"] == 9
    assert re.fullmatch(r"mimicry: index indexing 9/9 in \d+\.\d s \(\S+ img/s\)", progress[-1]), progress
    r = cli("scan", str(portfolio), "--index", ix, "--json", "--quiet")
    assert "mimicry: scan" not in r.stderr and len(lines(r.stdout)) == 9


def test_other_libraries_info_lines_only_with_verbose(tmp_path, cli, portfolio_of, monkeypatch):
    """FAISS's loader says ``No module named 'faiss.swigfaiss_avx512'`` at INFO:
    not the user's business unless -v; the package's own INFO lines stay."""
    import logging

    from mimicry.index import StyleIndex

    ix = str(tmp_path / "ix")
    assert cli("index", str(portfolio_of(tmp_path / "p", 2, 2)), "--index", ix, "-q").exit_code == 0
    real = StyleIndex.calibrate

    def chatty(self, *args, **kwargs):
        logging.getLogger("faiss.loader").info("No module named 'faiss.swigfaiss_avx512'")
        logging.getLogger("mimicry.calibration").info("own line")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(StyleIndex, "calibrate", chatty)
    r = cli("calibrate", "--index", ix)
    assert "swigfaiss" not in r.stderr and "own line" in r.stderr
    assert "own line" not in cli("calibrate", "--index", ix, "--quiet").stderr
    for flag in ("-v", "--verbose"):
        assert "INFO faiss.loader: No module named 'faiss.swigfaiss_avx512'" in cli("calibrate", "--index", ix, flag).stderr


def test_version_and_help_at_80_columns():
    from mimicry import __version__

    runner = CliRunner()
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"mimicry {__version__}"
    for command in ("index", "scan", "calibrate", "scan-model", "info", "remove", "evaluate", "serve", "demo"):
        r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert r.exit_code == 0 and "…" not in r.stdout, r.stdout  # no option name cut
        assert "--verbose" in r.stdout
    r = runner.invoke(app, ["scan", "--help"], env={"COLUMNS": "80"})
    assert "'mimicry[ray]'" in r.stdout and "match p-value" in r.stdout
    assert "--insecure-no-auth" in runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "80"}).stdout


def test_times_are_utc_iso_and_a_match_rate_is_a_p(tmp_path, cli, portfolio_of):
    """``calibrated_at`` is ``2026-12-01T00:52:59Z`` in JSON and text; the text
    line of a match prints its p-value as ``p``, not ``fpr`` (the flag's rate)."""
    import re

    portfolio, ix = portfolio_of(tmp_path / "p", artists=3, works=3), str(tmp_path / "ix")
    assert cli("index", str(portfolio), "--index", ix, "-q").exit_code == 0
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    cal = json.loads(cli("calibrate", "--index", ix, "--json", "-q").stdout)
    assert re.fullmatch(iso, cal["calibrated_at"])
    assert json.loads(cli("info", "--index", ix, "--json").stdout)["calibrated_at"] == cal["calibrated_at"]
    assert f"calibration current at {cal['calibrated_at']}" in cli("info", "--index", ix).stdout
    assert re.match(rf"calibrated 3 artists at {iso}: ", cli("calibrate", "--index", ix, "-q").stdout)
    rows = [line for line in cli("scan", str(portfolio), "--index", ix, "-q").stdout.splitlines()
            if line.startswith("  ")]
    assert rows and all(re.search(r"\d\.\d{3}  (flag )?p \S", row) for row in rows), rows
    assert not any(" fpr " in row for row in rows)
