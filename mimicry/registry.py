"""Artists who register themselves: names, tokens, uploaded works, who did what.

Promises:
- A token is shown once, when made; the index keeps only its sha256, and
  checks are constant-time.
- An artist name is checked before it is stored, and never becomes a path:
  uploaded works are stored inside the index folder under the sha256 of their
  bytes (``works/ab/abcdef....png``), written completely (temporary file,
  fsync, rename) before the commit that names them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mimicry.errors import InputError
from mimicry.images import ImageBytes, sniff_type

#: Artist names: letters, digits, and ``.``, ``_``, ``-`` or spaces inside; 1 to 100 characters.
NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._ -]{0,98}[A-Za-z0-9_])?$")
UPLOADS = "works"
_SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp",
           "image/bmp": ".bmp", "image/tiff": ".tif"}


@dataclass(frozen=True)
class Actor:
    """Who asks for a write, for the audit log: ``kind`` admin, artist or cli."""

    kind: str
    artist: str | None = None
    request_id: str | None = None


CLI = Actor("cli")


def check_name(name: str) -> str:
    """``name`` if it is a valid artist name, else :class:`InputError`."""
    if not isinstance(name, str) or not NAME.match(name):
        raise InputError(f"{name!r} is not a valid artist name: 1 to 100 letters, digits, "
                         f"'.', '_', '-' or spaces, starting and ending with a letter or digit")
    return name


def new_token() -> tuple[str, str]:
    """(token, its sha256): the token for the artist, the hash for the index."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_sha256: str | None) -> bool:
    """Whether ``token`` is the one whose hash is stored (constant time)."""
    if not stored_sha256:
        return False
    return hmac.compare_digest(token_hash(token).encode(), stored_sha256.encode())


def store_upload(index_folder: Path, image: ImageBytes) -> tuple[Path, str]:
    """Writes an upload's bytes inside the index, named by their sha256, durably
    (a temporary file of its own, fsync, rename, fsync of the folders); returns
    (path, sha256). Bytes already stored whole are not written again. Call it
    under the index's write lock: removals delete unreferenced files under it."""
    sha = hashlib.sha256(image.data).hexdigest()
    suffix = _SUFFIX.get(sniff_type(image.data) or "", ".img")
    final = index_folder / UPLOADS / sha[:2] / f"{sha}{suffix}"
    if final.exists() and hashlib.sha256(final.read_bytes()).hexdigest() == sha:
        return final, sha
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(image.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for folder in (final.parent, final.parent.parent, index_folder):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return final, sha
