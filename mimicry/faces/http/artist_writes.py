"""The writes to an artist's works that both faces make, the API
(:mod:`mimicry.faces.http.artists`) and the artist's web page
(:mod:`mimicry.faces.web.artist`), so the two cannot drift apart: the
thumbnails follow the works, and adding works starts a lookback. Blocking:
the faces call them in a worker thread. Each waits at most ``write_wait_s``
for the index lock."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from mimicry.faces.http.lookbacks import after_change
from mimicry.images import ImageBytes
from mimicry.registry import Actor

if TYPE_CHECKING:  # pragma: no cover
    from mimicry.faces.http.context import Service


def add_works(svc: Service, name: str, images: list[ImageBytes], actor: Actor) -> tuple[list[int], int | None]:
    """Adds ``images`` to ``name``'s works (all or none), makes their thumbnails
    while the bytes are here (a GET never decodes a stored upload), and starts
    a lookback for the artist; (the works' ids, the lookback's id or None)."""
    ids = svc.index.add_uploads(name, images, actor, svc.settings.write_wait_s)
    if svc.settings.thumbnails:
        svc.thumbs.keep(images, [hashlib.sha256(i.data).hexdigest() for i in images])
    return ids, after_change(svc, name)


def remove_work(svc: Service, name: str, work_id: int, actor: Actor) -> None:
    """Removes work ``work_id`` of ``name``, and then its thumbnails (unless
    another work has the same bytes)."""
    forget = svc.thumbs.forget(svc.index, name, work_id)
    svc.index.remove_work(name, work_id, actor, svc.settings.write_wait_s)
    forget()


def withdraw(svc: Service, name: str, actor: Actor) -> int:
    """Removes artist ``name`` with all their works, and then the thumbnails
    no other artist's work has; how many works went."""
    forget = svc.thumbs.forget(svc.index, name, None)
    n = svc.index.remove_artist(name, actor, svc.settings.write_wait_s)
    forget()
    return n
