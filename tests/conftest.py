"""Shared fixtures. Heavy ones (the default model, the demo's calibrated index)
are built once per test session; tests that write copy them first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import write_portfolio


@pytest.fixture(scope="session")
def default_embedder():
    from mimicry.backbones import load_embedder

    import sys; sys.path.insert(0, "/tmp"); from cachewrap import SessionVectors
    return SessionVectors(load_embedder("default", "cpu"))


@pytest.fixture(scope="session")
def _portfolio_template(tmp_path_factory) -> Path:
    return write_portfolio(tmp_path_factory.mktemp("template") / "portfolios")


@pytest.fixture
def portfolio(tmp_path: Path, _portfolio_template: Path) -> Path:
    """Three procedural artists with three works each, a private copy per test."""
    return Path(shutil.copytree(_portfolio_template, tmp_path / "portfolios"))


@pytest.fixture(scope="session")
def demo(tmp_path_factory, default_embedder):
    """``mimicry demo`` run once per session: (result, printed lines, its folder).
    Its index is calibrated with a background; treat it as read-only."""
    from mimicry.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    result = run_demo(out, echo=lines.append, embedder=default_embedder)
    return result, lines, out


@pytest.fixture
def calibrated_copy(demo, tmp_path) -> Path:
    """A private copy of the demo's calibrated index, free to write to."""
    _, _, out = demo
    dst = tmp_path / "index"
    shutil.copytree(out / "index", dst, ignore=shutil.ignore_patterns("lock"))
    return dst
