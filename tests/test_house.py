"""The house rules the package keeps: small modules, short functions, storage
that never imports the domain, and no environment read outside the settings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mimicry"
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
#: Domain modules storage must never import (not even for type checking).
DOMAIN = ("mimicry.calibration", "mimicry.flagging", "mimicry.model_test", "mimicry.scoring",
          "mimicry.index", "mimicry.scanning", "mimicry.ingestion",
          "mimicry.registry", "mimicry.opening")


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_the_limit():
    long = {str(p.relative_to(PACKAGE)): n for p in sources()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_limit():
    long = {}
    for p in sources():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(PACKAGE)}:{node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import stands."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_storage_never_imports_the_domain():
    bad = {str(p.relative_to(PACKAGE)): sorted(m for m in imported(p) if m.startswith(DOMAIN))
           for p in (PACKAGE / "store").rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def test_only_the_settings_read_the_environment():
    readers = [str(p.relative_to(PACKAGE)) for p in sources() if p.name != "settings.py"
               and re.search(r"os\.environ|os\.getenv|getenv\(", p.read_text())]
    assert not readers, f"modules reading the environment outside settings.py: {readers}"


@pytest.mark.slow
def test_a_cli_scan_enters_at_most_twenty_one_package_files():
    """``scripts/trace_scan.py`` runs ``mimicry scan ONE.png --index IDX --json``
    in a fresh process: a scan loads what it needs, not the write side, the
    approximate indexes, reports or plain-text output. (20 until the model ran
    on ONNX Runtime by default: :mod:`mimicry.backbones.onnx_runtime` is the 21st.)"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(PACKAGE.parent / "scripts" / "trace_scan.py")],
                         capture_output=True, text=True, check=True, cwd=PACKAGE.parent).stdout
    files = int(re.search(r"files=(\d+)", out).group(1))
    assert files <= 21, out
