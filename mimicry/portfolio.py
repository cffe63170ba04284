"""Portfolios: which image belongs to which artist.

Two layouts are read:
- a folder with one sub-folder per artist (``portfolios/<artist>/...``, nested
  folders allowed; the top-level folder name is the artist);
- a CSV file with a header naming ``path`` and ``artist`` columns (other columns
  ignored; relative paths are taken from the CSV's own folder).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mimicry.errors import PortfolioError
from mimicry.images import ImageBytes, ImageSource, iter_image_files
from mimicry.results import Skipped

__all__ = ["Portfolio", "PortfolioError", "background_groups", "read_portfolio"]


@dataclass
class Portfolio:
    """Artist name -> image paths (absolute), plus entries that were not usable."""

    works: dict[str, list[Path]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)


def read_portfolio(source: str | Path) -> Portfolio:
    """Reads a portfolio folder or CSV. Raises :class:`PortfolioError` if ``source``
    is neither, or a CSV lacks the ``path`` and ``artist`` columns."""
    source = Path(source)
    if source.is_dir():
        return _from_folder(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return _from_csv(source)
    if not source.exists():
        raise PortfolioError(f"{source}: no such file or folder")
    raise PortfolioError(f"{source}: expected a folder of artist folders or a .csv of path,artist")


def _from_folder(root: Path) -> Portfolio:
    out = Portfolio()
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = [p.resolve() for p in iter_image_files(entry)]
            if files:
                out.works[entry.name] = files
        elif entry.is_file():
            out.skipped.append(
                Skipped(str(entry), "file at the top level: put each artist's works in a folder named for the artist")
            )
    return out


def _from_csv(path: Path) -> Portfolio:
    out = Portfolio()
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            if "path" not in cols or "artist" not in cols:
                raise PortfolioError(f"{path}: CSV needs a header with 'path' and 'artist' columns")
            for line, row in enumerate(reader, start=2):
                p = (row.get(cols["path"]) or "").strip()
                artist = (row.get(cols["artist"]) or "").strip()
                if not p or not artist:
                    out.skipped.append(Skipped(f"{path}:{line}", "row lacks a path or an artist"))
                    continue
                file = Path(p) if Path(p).is_absolute() else path.parent / p
                out.works.setdefault(artist, []).append(file.resolve())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PortfolioError(f"{path}: cannot read CSV ({exc})") from None
    return out


def background_groups(images: Sequence[ImageSource], roots: Sequence[ImageSource]) -> np.ndarray:
    """A group number for each background image (one group per maker, as far as
    the folders tell): images in the same first-level sub-folder of a given
    folder share a group; when several folders are given, the images lying
    directly in one of them share that folder's group (``--background monet/
    degas/``); images lying directly in the only folder given, loose files and
    uploads are each a group of their own. Calibration leaves an image's own
    group out of its reference neighbours, so one maker's works never vouch for
    each other.

    The maker is read from the paths as named (made absolute, symlinks not
    followed): ``bg/monet/a.jpg`` is Monet's whether it is a file, a symlink to
    a file elsewhere, or lies in ``bg/monet`` linked to a folder elsewhere."""
    folders = [Path(os.path.abspath(r)) for r in roots if not isinstance(r, ImageBytes) and Path(r).is_dir()]
    keys: dict[tuple[str, str], int] = {}
    out = np.empty(len(images), dtype=np.int64)
    for i, img in enumerate(images):
        key = ("", f"#{i}")
        if not isinstance(img, ImageBytes):
            path = Path(os.path.abspath(img))
            for root in folders:
                try:
                    rel = path.relative_to(root)
                except ValueError:
                    continue
                if len(rel.parts) > 1:
                    key = (str(root), rel.parts[0])
                elif len(folders) > 1:
                    key = (str(root), "")
                break
        out[i] = keys.setdefault(key, len(keys))
    return out
