"""Who a bearer token is, for every face the service has (the API's routes and
the web pages alike): :func:`who_is` answers the admin, a moderator by name,
an artist by name, or nobody; :func:`caller` does the same for a request;
``SignedIn``, ``Moderating`` and ``Moderation`` are the routes' dependencies.

Promises: every comparison is constant-time or by the token's sha256 (the
moderation database and the index keep only hashes); the admin token wins
over everything else; on an ``insecure_no_auth`` service a request whose
token is nobody's is ``anonymous``, allowed what the admin is (as writes are
there). Looking a token up reads two SQLite databases: call these from a
worker thread (a plain ``def`` route), not on the event loop.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Mapping

from fastapi import Depends, Request

from mimicry.errors import ForbiddenError, UnauthorizedError
from mimicry.faces.http.context import Service
from mimicry.faces.http.deps import ServiceDep
from mimicry.faces.http.gate import bearer
from mimicry.moderation.db import ModerationDB

#: The roles :func:`who_is` answers.
ROLES = ("admin", "moderator", "artist", "anonymous", "nobody")


@dataclass(frozen=True)
class Identity:
    """Who a token is: ``role`` one of :data:`ROLES` and, for a moderator or an
    artist, their ``name``."""

    role: str
    name: str | None = None

    @property
    def is_admin(self) -> bool:
        """The admin (or anyone on an ``insecure_no_auth`` service)."""
        return self.role in ("admin", "anonymous")

    @property
    def moderates(self) -> bool:
        """May read every case and decide cases: the admin or a moderator."""
        return self.is_admin or self.role == "moderator"

    @property
    def known(self) -> bool:
        """Anyone but nobody."""
        return self.role != "nobody"

    @property
    def actor(self) -> str:
        """The name a decision is recorded under: the moderator's or the artist's
        name, else the role (``admin``, ``anonymous``)."""
        return self.name if self.name is not None else self.role


NOBODY = Identity("nobody")


def who_is(svc: Service, token: str | None) -> Identity:
    """Who ``token`` is on the service ``svc``: the admin (``MIMICRY_ADMIN_TOKEN``),
    a moderator (``POST /v1/moderators``), a registered artist, or nobody (or
    ``anonymous`` on an ``insecure_no_auth`` service). Stable: the web pages
    sign in with it."""
    if token:
        admin_token = svc.settings.admin_token
        if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
            return Identity("admin")
        if svc.moderation is not None:
            from mimicry.moderation import moderators

            name = moderators.who(svc.moderation, token)
            if name is not None:
                return Identity("moderator", name)
        from mimicry.registry import artist_for_token

        artist = artist_for_token(svc.index, token)
        if artist is not None:
            return Identity("artist", artist)
    return Identity("anonymous") if svc.insecure_no_auth else NOBODY


def caller(svc: Service, headers: Mapping[str, str]) -> Identity:
    """Who sent a request with ``headers`` (its ``Authorization: Bearer`` token)."""
    return who_is(svc, bearer(headers))


# -- as FastAPI dependencies ------------------------------------------------------
def _signed_in(request: Request, svc: ServiceDep) -> Identity:
    """Whoever sent the request, when anyone: no token is 401, a token that
    is nobody's 403. A plain ``def``: the look-up reads databases, on a worker thread."""
    who = caller(svc, request.headers)
    if not who.known:
        if bearer(request.headers) is None:
            raise UnauthorizedError("this needs a token: Authorization: Bearer <token>")
        raise ForbiddenError("this token is not the admin's, a moderator's or an artist's")
    return who


def _moderating(who: Annotated[Identity, Depends(_signed_in)]) -> Identity:
    """The admin or a moderator; an artist is 403."""
    if not who.moderates:
        raise ForbiddenError("this needs a moderator's or the admin's token")
    return who


def _moderation_db(svc: ServiceDep) -> ModerationDB:
    """The service's moderation database (404 on a service that has none)."""
    return svc.moderation_or_404()


SignedIn = Annotated[Identity, Depends(_signed_in)]
Moderating = Annotated[Identity, Depends(_moderating)]
Moderation = Annotated[ModerationDB, Depends(_moderation_db)]
