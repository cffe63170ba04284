"""Thumbnails of registered works, cheap and bounded: each is made once and
kept in the index folder's ``thumbnails/`` (named by the work's sha256 and the
side, written atomically), made at most ``GATE`` at a time, decoding as
little as the format allows (a JPEG at reduced size). An upload's thumbnail
is made when it is uploaded, while its bytes are in memory anyway, so a GET
never decodes the full image of a work the service stored."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from mimicry.errors import ImageError, NotFoundError
from mimicry.images import ImageBytes, ImageSource, reduced_jpeg
from mimicry.store.durable import write_atomically

#: Thumbnails decoded at once, per app (a 9000x9000 PNG decodes to about 320 MB).
GATE = 1
FOLDER = "thumbnails"


def cached_path(folder: Path, sha256: str, side: int) -> Path:
    """Where the thumbnail of the work with ``sha256`` at ``side`` pixels is kept."""
    return folder / FOLDER / f"{sha256}-{side}.jpg"


def render(source: ImageSource, side: int) -> bytes:
    """``source`` as a thumbnail JPEG at most ``side`` pixels on its long side
    (:func:`mimicry.images.reduced_jpeg`)."""
    return reduced_jpeg(source, side, quality=85)


class Thumbnails:
    """One app's thumbnails of the works in the index at ``folder``."""

    def __init__(self, folder: Path, side: int) -> None:
        self.folder, self.side = folder, side
        self.gate = threading.BoundedSemaphore(GATE)

    def of_work(self, work: Any) -> bytes:
        """The thumbnail of registered work ``work`` (:meth:`get`);
        :class:`NotFoundError` when its file is not available."""
        try:
            return self.get(Path(work.path), work.sha256)
        except ImageError:
            raise NotFoundError(f"the file of work {work.id} is not available") from None

    def get(self, source: ImageSource, sha256: str) -> bytes:
        """The thumbnail of the work stored at ``source`` (bytes hashing to
        ``sha256``): from the cache, else made (one at a time) and kept.
        A plain function: called on a worker thread."""
        path = cached_path(self.folder, sha256, self.side)
        if not isinstance(source, ImageBytes) and not Path(source).is_file():
            raise ImageError(source, "file is not available")  # kept or not, a missing work is missing
        try:
            return path.read_bytes()
        except OSError:
            pass
        with self.gate:
            try:  # made by another request while this one waited
                return path.read_bytes()
            except OSError:
                data = render(source, self.side)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(path, data, durable=False)  # a cache: made again if lost
            except OSError:
                pass  # a read-only folder: served, not kept
            return data

    def keep(self, sources: list[ImageSource], sha256s: list[str]) -> None:
        """Makes the thumbnails of just-uploaded works (errors ignored: a GET
        makes them later)."""
        from mimicry.errors import MimicryError

        for source, sha in zip(sources, sha256s):
            try:
                self.get(source, sha)
            except MimicryError:
                continue

    def forget(self, index: Any, artist: str, work_id: int | None = None) -> Callable[[], None]:
        """Before removing ``artist``'s work ``work_id`` (or all their works):
        a call that, once the removal is done, deletes the kept thumbnails no
        remaining work shares (a withdrawn work leaves no image behind)."""
        works = index.snapshot().works.values()
        gone = {w.sha256 for w in works if w.artist == artist and work_id in (None, w.id)}

        def after() -> None:
            left = {w.sha256 for w in index.snapshot().works.values()}
            for sha in gone - left:
                for path in (self.folder / FOLDER).glob(f"{sha}-*.jpg"):
                    path.unlink(missing_ok=True)

        return after
