"""A labelled set for evaluation: a CSV with columns ``path, role, artist``
(role: genuine, imitation, negative; other columns ignored; paths relative to
the CSV's folder or absolute); the CLI calls it the manifest. Genuine rows are
the portfolio; the rest are scanned. An imitation of an artist with no
portfolio is art no registered artist made: it counts as a negative.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

import numpy as np

from mimicry.errors import InputError

__all__ = ["LabelledRow", "choose_unregistered", "read_labelled", "scan_role", "split_background"]


@dataclass(frozen=True)
class LabelledRow:
    """One row of a labelled set."""

    path: Path
    role: str
    artist: str
    model: str = ""  # the model that made a sample (the optional ``model`` column), "" for none


def read_labelled(path: str | Path) -> list[LabelledRow]:
    """Rows of a ``path, role, artist[, model]`` CSV, paths made absolute."""
    path = Path(path)
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not {"path", "role"} <= set(reader.fieldnames or []):
                raise InputError(f"{path}: manifest needs path, role and artist columns")
            for line, r in enumerate(reader, start=2):
                if not (r.get("path") or "").strip() or not (r.get("role") or "").strip():
                    raise InputError(f"{path}:{line}: row lacks a path or a role")
                p = Path(r["path"].strip())
                rows.append(LabelledRow(p if p.is_absolute() else (path.parent / p).resolve(),
                                        r["role"].strip(), (r.get("artist") or "").strip(),
                                        (r.get("model") or "").strip()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc})") from None
    return rows


def choose_unregistered(rows: list[LabelledRow], n: int, seed: int) -> set[str]:
    """``n`` artists, among those with genuine works and imitations, chosen by ``seed``."""
    with_imi = {r.artist for r in rows if r.role == "imitation"}
    with_gen = {r.artist for r in rows if r.role == "genuine"}
    pool = sorted(with_imi & with_gen)
    if n > len(pool):
        raise InputError(f"--unregistered {n}: only {len(pool)} artists have both works and imitations")
    rng = np.random.default_rng(seed)
    return set(rng.choice(pool, size=n, replace=False).tolist()) if n else set()


def scan_role(r: LabelledRow, artists: Collection[str], unregistered: Collection[str]) -> str | None:
    """How a row is scanned against a portfolio of ``artists``: ``imitation``
    (of a registered artist), ``negative``, ``unregistered`` (art of an artist
    moved out of the portfolio), or None (a genuine work: the portfolio)."""
    if r.role == "imitation" and r.artist in artists:
        return "imitation"
    if r.role == "negative" or (r.role == "imitation" and r.artist not in artists):
        return "unregistered" if r.artist in unregistered else "negative"
    if r.role == "genuine" and r.artist in unregistered:
        return "unregistered"
    return None


def split_background(paths: list[Path], groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (calibration, held out): half the groups each, chosen by
    ``seed``, so no group (maker, as :func:`~mimicry.portfolio.background_groups`
    tells them apart) is on both sides."""
    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    rng.shuffle(ids)
    held = np.isin(groups, ids[len(ids) // 2:])
    return ~held, held
