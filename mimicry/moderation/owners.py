"""Which process a background job belongs to, and whether that process is alive.

Each process that runs jobs on an index folder (lookbacks) holds, for its
whole life, an exclusive ``flock`` on a file of its own,
``history/owners/<id>.lock``, and writes that ``id`` in the rows of the jobs
it runs. The operating system lets go of the lock when the process ends,
however it ends (SIGKILL included), so another process on the same machine
can tell a job whose process is gone (its owner's file can be locked, or is
missing) from one still running in a live process (the lock is held).

Promises:

- :func:`alive` is True for an owner id of a live process on this machine
  that made it with :func:`this_process`, False for one whose process has
  ended; an owner's file is removed once it is found dead, and
  :func:`sweep` removes every dead owner's file (a service does at start).
- Where ``fcntl`` is missing (not a POSIX system), every owner counts as
  gone: jobs are taken over as before owners existed.

Locks live on the index folder's filesystem: processes on other machines
sharing the folder over a network filesystem may not see each other's locks.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system
    fcntl = None  # type: ignore[assignment]

OWNERS = Path("history") / "owners"

_mine: dict[tuple[int, Path], tuple[str, int]] = {}  # (pid, folder) -> (owner id, locked fd)
_lock = threading.Lock()


def this_process(folder: str | Path) -> str:
    """This process's owner id for jobs on ``folder`` (made, and its file
    locked, on first use; the same id for the rest of the process's life).
    The file is locked under a temporary name and then renamed, so no other
    process ever sees an owner's file that is not locked yet."""
    key = (os.getpid(), Path(folder).resolve())
    with _lock:
        if key not in _mine:
            owner = uuid.uuid4().hex
            path = Path(folder) / OWNERS / f"{owner}.lock"
            path.parent.mkdir(parents=True, exist_ok=True)
            making = path.with_suffix(".making")
            fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else holds it
                os.replace(making, path)
            except BaseException:
                os.close(fd)
                making.unlink(missing_ok=True)
                raise
            _mine[key] = (owner, fd)
        return _mine[key][0]


def _after_fork_in_child() -> None:
    """A forked child is not its parent: it lets go of the parent's owner
    files (the parent's lock lasts as long as the parent) and makes its own."""
    global _lock
    for _, fd in _mine.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _mine.clear()
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def sweep(folder: str | Path) -> int:
    """Removes the files of owners whose process has ended (each process
    leaves one behind); how many went."""
    where = Path(folder) / OWNERS
    if not where.is_dir():
        return 0
    stale = time.time() - 3600  # a ".making" file this old was left by a kill while it was being made
    for making in where.glob("*.making"):
        try:
            if making.stat().st_mtime < stale:
                making.unlink()
        except FileNotFoundError:
            pass
    return sum(not alive(folder, path.stem) for path in where.glob("*.lock"))


def alive(folder: str | Path, owner: str | None) -> bool:
    """Whether the process that made ``owner`` (with :func:`this_process`)
    is still running; a dead owner's file is removed."""
    if owner is None or fcntl is None or not owner.isalnum():
        return False
    if any(mine == owner for (pid, _), (mine, _) in _mine.items() if pid == os.getpid()):
        return True
    path = Path(folder) / OWNERS / f"{owner}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # its process holds the lock: alive
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)  # its process is gone
    return False
