"""Web pages for moderators and artists, served by ``mimicry serve`` beside
the API: Jinja2 templates and one stylesheet from this package (nothing from
the network, no script: every page works without JavaScript).

- ``/``: sign in with a token (the admin's, a moderator's or an artist's);
- ``/cases`` and ``/cases/{id}``: the queue and a case, with decisions
  (moderators and the admin);
- ``/artist``: an artist's works, uploads, withdrawal, and the cases about
  their style (artists).

Without a session, every page but ``/`` sends the browser to ``/``. The
session is a signed cookie (:mod:`.session`); every form carries a CSRF
token. Layout: :mod:`.pages` (what the routes share), :mod:`.signin`,
:mod:`.cases`, :mod:`.artist`, :mod:`.images` (the pictures, behind the
session), :mod:`.evidence` (a case's evidence read back from the history).
"""

from __future__ import annotations

from fastapi import APIRouter

from mimicry.faces.web import artist, cases, images, signin

__all__ = ["router"]

#: Every page route; :func:`mimicry.faces.http.create_app` includes it.
router = APIRouter(include_in_schema=False)
for _part in (signin.router, cases.router, images.router, artist.router):
    router.include_router(_part)
