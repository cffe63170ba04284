"""Artists who register themselves: names, tokens, uploaded works, who did what.

The writes of registered artists (and of the administrator on their behalf)
over a :class:`~mimicry.index.StyleIndex`: :func:`register_artist`,
:func:`rotate_token`, :func:`add_uploads`, :func:`remove_work`,
:func:`remove_artist`, and the audit log they leave (:func:`audit`). Each is
one atomic commit with its audit row; a change to a calibrated portfolio
recalibrates it in the same writer (:func:`mimicry.ingestion.refresh_calibration`).

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
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from mimicry.errors import ConflictError, InputError, NotFoundError, quoted
from mimicry.images import ImageBytes, sniff_type

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.index import StyleIndex
    from mimicry.store import Writer
    from mimicry.store.catalogue import AuditEntry, Work

log = logging.getLogger(__name__)

#: Artist names: letters, digits, and ``.``, ``_``, ``-`` or spaces inside; 1 to 100
#: characters; matched whole (:meth:`re.Pattern.fullmatch`: no final newline slips through).
NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._ -]{0,98}[A-Za-z0-9_])?")
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
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InputError(f"{quoted(name)} is not a valid artist name: 1 to 100 letters, digits, "
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


# -- the writes, over an index ---------------------------------------------------
def register_artist(ix: StyleIndex, name: str, actor: Actor | None = None, wait_s: float | None = None) -> str:
    """Registers ``name`` (who may have no works yet) and returns their token,
    shown this once; the index keeps its hash. :class:`ConflictError` when
    the name is taken, in any case (``ALICE`` beside ``alice``)."""
    actor = actor or CLI
    check_name(name)
    token, digest = new_token()
    with ix.store.writer(wait_s) as w:
        if w.artist_exists(name, nocase=True):
            raise ConflictError(f"artist {quoted(name)} is already registered")
        with w.change() as cat:
            cat.register_artist(name, digest)
            cat.record(actor.kind, actor.artist, "register_artist", name, request_id=actor.request_id)
    return token


def rotate_token(ix: StyleIndex, name: str, actor: Actor | None = None, wait_s: float | None = None) -> str:
    """A new token for ``name`` (the old one stops working); returns it."""
    actor = actor or CLI
    token, digest = new_token()
    with ix.store.writer(wait_s) as w:
        if not w.artist_exists(name):
            raise NotFoundError(f"no artist {quoted(name)} is registered")
        with w.change() as cat:
            cat.set_token(name, digest)
            cat.record(actor.kind, actor.artist, "rotate_token", name, request_id=actor.request_id)
    return token


def artist_token_matches(ix: StyleIndex, name: str, token: str) -> bool:
    """Whether ``token`` is ``name``'s (False for an unknown artist; constant time)."""
    with ix.store._reader() as cat:
        return token_matches(token, cat.token_sha256(name))


def artist_for_token(ix: StyleIndex, token: str) -> str | None:
    """The registered artist whose token ``token`` is, or None (a sign-in by token alone)."""
    return artist_for_token_sha256(ix, token_hash(token))  # the token is never stored


def artist_for_token_sha256(ix: StyleIndex, digest: str) -> str | None:
    """The registered artist whose token has the sha256 ``digest`` (hex), or None."""
    with ix.store._reader() as cat:
        return cat.artist_with_token(digest)


def add_uploads(ix: StyleIndex, name: str, images: Sequence[ImageBytes], actor: Actor | None = None,
                wait_s: float | None = None) -> list[int]:
    """Adds uploaded works to ``name`` (stored inside the index, named by hash;
    never pruned by ``mimicry index``) and returns their work ids, in order.
    Every image must decode, or nothing is added (:class:`ImageError`). The
    vectors are committed only if the index is still pinned to the model that
    made them (:class:`PinMismatchError` otherwise)."""
    actor = actor or CLI
    from mimicry.engines import Embedded

    got = Embedded.gather(ix.engine().embed(images, batch_size=ix.settings.batch_size), ix.embedder.dim)
    if got.failed:
        raise got.failed[0][1]
    with ix.store.writer(wait_s, expect=ix.embedder) as w:
        if not w.artist_exists(name):
            raise NotFoundError(f"no artist {quoted(name)} is registered")
        stored = [store_upload(ix.folder, img) for img in images]  # under the lock: see remove_work
        out = _commit_uploads(w, name, stored, images, got.vectors, actor)
        _recalibrate(w)
    return out


def _commit_uploads(w: Writer, name: str, stored: list[tuple[Path, str]], images: Sequence[ImageBytes],
                    vectors, actor: Actor) -> list[int]:
    """Commits the uploads not already among ``name``'s works, with one audit
    row naming every upload's work id; those ids, in upload order."""
    from mimicry.store import NewWork
    from mimicry.store.catalogue import UPLOAD

    known = {x.path: x.id for x in w.works(name)}
    add = []
    for (path, sha), img, v in zip(stored, images, vectors):
        if str(path) not in known and all(str(path) != a.path for a, _ in add):
            add.append((NewWork(name, str(path), sha, len(img.data), 0, origin=UPLOAD), v))

    def record(cat, new_ids: list[int]) -> None:
        known.update({a.path: wid for (a, _), wid in zip(add, new_ids)})
        ids = ",".join(str(known[str(path)]) for path, _ in stored)
        cat.record(actor.kind, actor.artist, "add_works", name, detail=ids, request_id=actor.request_id)

    if add:
        w.commit(add, [], audit=record)
    else:  # every image was there already: only the audit row is new
        record(w, [])
    return [known[str(path)] for path, _ in stored]


def remove_work(ix: StyleIndex, name: str, work_id: int, actor: Actor | None = None,
                wait_s: float | None = None) -> None:
    """Removes one of ``name``'s works (:class:`NotFoundError` when it is not theirs)."""
    actor = actor or CLI
    with ix.store.writer(wait_s) as w:
        work = next((x for x in w.works(name) if x.id == work_id), None)
        if work is None:
            raise NotFoundError(f"artist {quoted(name)} has no work {work_id}")
        w.commit([], [work_id], audit=lambda cat, _: cat.record(
            actor.kind, actor.artist, "remove_work", name, detail=str(work_id), request_id=actor.request_id))
        _recalibrate(w)
        _delete_unreferenced(w, [work])


def remove_artist(ix: StyleIndex, name: str, actor: Actor | None = None, wait_s: float | None = None) -> int:
    """Removes ``name`` and all their vectors (and uploaded files); returns how
    many works went. Raises :class:`NotFoundError` for an artist the index does not hold."""
    actor = actor or CLI
    with ix.store.writer(wait_s) as w:
        if not w.artist_exists(name):
            raise NotFoundError(f"{ix.folder}: no artist {quoted(name)} in the index")
        works = w.works(name)
        ids = [x.id for x in works]
        w.commit([], ids, remove_artist=name, audit=lambda cat, _: cat.record(
            actor.kind, actor.artist, "remove_artist", name, detail=str(len(ids)),
            request_id=actor.request_id))
        _delete_unreferenced(w, works)
        _recalibrate(w)
    return len(ids)


def audit(ix: StyleIndex, after: int = 0, limit: int = 100) -> list[AuditEntry]:
    """Recorded writes after id ``after``, oldest first, at most ``limit``."""
    with ix.store._reader() as cat:
        return cat.audit(after, limit)


def _delete_unreferenced(w: Writer, gone: Sequence[Work]) -> None:
    """Deletes the uploaded files of works ``gone`` that no remaining work names
    (under the write lock, after the commit: a kill between leaves a stray file, never a missing one)."""
    from mimicry.store.catalogue import UPLOAD

    left = {x.path for x in w.works()}
    for x in gone:
        if x.origin == UPLOAD and x.path not in left:
            path = Path(x.path)
            path.unlink(missing_ok=True)
            if path.parent.parent.name == UPLOADS:  # works/ab/: removed once empty
                try:
                    path.parent.rmdir()
                except OSError:
                    pass  # other works (or a stray file) still there


def _recalibrate(w: Writer) -> None:
    """Recalibrates after a portfolio change, and logs what the caller cannot be
    told in a return value (a calibration dropped)."""
    from mimicry.ingestion import refresh_calibration

    for line in refresh_calibration(w):
        log.warning("%s", line)
