"""End to end through the installed CLI, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import write_portfolio
from mimicry.synthetic import STYLES, paint, scene


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mimicry.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_index_scan_remove_end_to_end(tmp_path):
    portfolio = write_portfolio(tmp_path / "p", artists=3, works=3)
    ix = str(tmp_path / "ix")

    r = run("index", str(portfolio), "--index", ix, "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["embedded"] == 9 and out["artists"] == 3 and out["works"] == 9 and out["skipped"] == []
    assert set(out) == {"embedded", "unchanged", "removed", "artists", "works", "skipped"}

    r = run("index", str(portfolio), "--index", ix, "--json", "-q")
    assert json.loads(r.stdout)["embedded"] == 0 and json.loads(r.stdout)["unchanged"] == 9

    target = STYLES[1]
    paint(scene(555), target, 555).save(portfolio / target.name / "late.png")
    (portfolio / target.name / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = run("index", str(portfolio), "--json", "-q", env={"MIMICRY_INDEX": ix})
    assert r.returncode == 0
    out = json.loads(r.stdout)
    assert out["embedded"] == 1 and out["works"] == 10
    assert out["skipped"][0]["path"].endswith("corrupt.png") and out["skipped"][0]["reason"]

    # An imitation: the artist's style on a scene they never painted.
    queries = tmp_path / "q"
    queries.mkdir()
    paint(scene(9001), target, 9002).save(queries / "suspect.png")
    (queries / "unreadable.jpg").write_bytes(b"nope")
    r = run("scan", str(queries), "--index", ix, "--json", "-q", "--top", "2")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    by_name = {Path(l["image"]).name: l for l in lines}
    suspect = by_name["suspect.png"]
    assert suspect["error"] is None and suspect["matches"][0]["artist"] == target.name
    assert len(suspect["matches"]) == 2
    ev = suspect["matches"][0]["evidence"][0]
    assert Path(ev["path"]).parent.name == target.name and 0 < ev["similarity"] <= 1.0001
    assert by_name["unreadable.jpg"]["matches"] == [] and by_name["unreadable.jpg"]["error"]

    r = run("info", "--index", ix, "--json")
    info = json.loads(r.stdout)
    assert info["backbone_id"] == "efficientnet-lite0" and info["works"] == 10

    r = run("remove", target.name, "--index", ix)
    assert r.returncode == 0
    info = json.loads(run("info", "--index", ix, "--json").stdout)
    assert target.name not in info["artists"] and info["works"] == 6

    r = run("scan", str(queries / "suspect.png"), "--index", ix, "--json", "-q")
    assert target.name not in [m["artist"] for m in json.loads(r.stdout)["matches"]]


def test_usage_errors_exit_2(tmp_path):
    r = run("scan", str(tmp_path), "--index", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a mimicry index" in r.stderr
    r = run("index", str(tmp_path / "nowhere"), "--index", str(tmp_path / "ix"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = run("scan", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "MIMICRY_INDEX" in r.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    write_portfolio(tmp_path / "p", artists=1, works=1)
    assert run("index", str(tmp_path / "p"), "--index", str(tmp_path / "ix"), "-q").returncode == 0
    r = run("scan", str(bad), "--index", str(tmp_path / "ix"), "--json")
    assert r.returncode == 2  # nothing at all could be read
    assert json.loads(r.stdout)["error"]
