"""Writes that survive a kill or a power cut: fsync the file, rename it over the
final name, fsync the folder. Every file the index writes goes through here."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Makes the folder's entries (a rename) durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_replace(tmp: Path, final: Path) -> None:
    """``tmp``'s bytes made durable, then renamed over ``final`` (atomic), folder synced."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)
