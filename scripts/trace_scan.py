"""How many package files one CLI scan enters: ``files=N``.

Builds a small calibrated index of synthetic portfolios (in a process of its
own), then runs ``mimicry scan ONE.png --index IDX --json`` in a fresh process
under ``sys.setprofile`` and counts, from the first import of the package to
the scan's exit:

- ``files``: distinct ``mimicry/`` files whose code runs (module bodies, that
  is imports, included);
- ``switches``: how often the running code moves from one such file to another;
- ``sqlite_connections``: SQLite connections opened.

Usage: ``python scripts/trace_scan.py [--index IDX --image IMG] [--list]``.
Run it from the repository root so the ``mimicry`` under test is this checkout's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = str(ROOT / "mimicry") + os.sep


def prepare(folder: Path) -> tuple[Path, Path]:
    """A calibrated index of the synthetic portfolios under ``folder``, and one image to scan."""
    from mimicry.index import StyleIndex
    from mimicry.synthetic import make_dataset

    data = make_dataset(folder / "data", works_per_artist=4, imitations_per_artist=1, unrelated=1)
    ix = StyleIndex.create(folder / "index")
    ix.add_folder(data.portfolios)
    ix.calibrate()
    image = sorted(data.imitations.iterdir())[0]
    return folder / "index", image


def trace(index: Path, image: Path) -> dict:
    """Runs the scan in this process under a profiler; what it entered."""
    import sqlite3

    connections = 0
    real_connect = sqlite3.connect

    def counted_connect(*args, **kwargs):
        nonlocal connections
        connections += 1
        return real_connect(*args, **kwargs)

    sqlite3.connect = counted_connect  # type: ignore[assignment]
    files: dict[str, int] = {}
    state = {"last": None, "switches": 0}

    def profile(frame, event, arg):  # noqa: ANN001 - the profiler's signature
        if event != "call":
            return
        name = frame.f_code.co_filename
        if not name.startswith(PACKAGE):
            return
        files[name] = files.get(name, 0) + 1
        if state["last"] is not None and state["last"] != name:
            state["switches"] += 1
        state["last"] = name

    sys.setprofile(profile)
    code = 0
    try:
        from mimicry.faces.cli import app

        code = app(["scan", str(image), "--index", str(index), "--json", "--quiet"],
                   standalone_mode=False) or 0
    except SystemExit as exc:  # typer's exit code for a flag
        code = int(exc.code or 0)
    finally:
        sys.setprofile(None)
        sqlite3.connect = real_connect  # type: ignore[assignment]
    return {"files": len(files), "switches": state["switches"], "sqlite_connections": connections,
            "exit": code, "paths": sorted(os.path.relpath(f, ROOT) for f in files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--list", action="store_true", help="also list the files entered")
    parser.add_argument("--trace-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trace_only:
        print(json.dumps(trace(args.index, args.image)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        index, image = args.index, args.image
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if index is None or image is None:
            out = subprocess.run([sys.executable, "-c",
                                  "import sys, json; sys.path.insert(0, sys.argv[1]); "
                                  "from trace_scan import prepare; from pathlib import Path; "
                                  "print(json.dumps([str(p) for p in prepare(Path(sys.argv[2]))]))",
                                  str(ROOT / "scripts"), tmp],
                                 check=True, capture_output=True, text=True, cwd=ROOT, env=env)
            index, image = map(Path, json.loads(out.stdout.strip().splitlines()[-1]))
        out = subprocess.run([sys.executable, __file__, "--trace-only", "--index", str(index),
                              "--image", str(image)], check=True, capture_output=True, text=True,
                             cwd=ROOT, env=env)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    if args.list:
        for p in result["paths"]:
            print(p)
    print(f"files={result['files']} switches={result['switches']} "
          f"sqlite_connections={result['sqlite_connections']} exit={result['exit']}")


if __name__ == "__main__":
    main()
