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


def write_atomically(path: Path, data: bytes, mode: int | None = None, durable: bool = True) -> None:
    """``data`` at ``path``, whole or not at all: written to a temporary file
    beside it (``.<name>…tmp``, removed on any failure), given ``mode`` when
    set, then renamed over ``path``. ``durable``: the bytes and the rename
    are synced to disk too (:func:`sync_replace`); without it a power cut
    may lose the file (never leave it half written), for caches made again."""
    import tempfile

    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    tmp = Path(name)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if durable:
            sync_replace(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
