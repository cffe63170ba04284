"""What every page route shares: the app's web state (:class:`Web`: the
signing secret, the moderation database, large thumbnails), who is signed in
(:func:`signed_in`, :func:`need`), rendering with the pages' headers
(:func:`render`), and :func:`page`, which turns errors into pages: no session
is a redirect to the sign-in page, any :class:`MimicryError` a page with its
status."""

from __future__ import annotations

import functools
import inspect
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException

from mimicry.errors import ForbiddenError, InputError, MimicryError, clipped
from mimicry.faces.http.thumbs import Thumbnails
from mimicry.faces.web import session as sessions
from mimicry.faces.web.session import Session
from mimicry.moderation.db import ModerationDB

if TYPE_CHECKING:  # pragma: no cover
    from jinja2 import Environment

    from mimicry.faces.http.context import Service

HERE = Path(__file__).parent
#: Long side, in pixels, of the works' pictures on a case page (shown at up to
#: 512 CSS pixels, the whole width when enlarged), as the previews of uploads.
LARGE_SIDE = 1024
#: Who may read and decide cases.
MODERATING = ("admin", "moderator")
#: Headers of every page: nothing loads from anywhere but this service, no
#: script runs, no page is framed or cached.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class Web:
    """One app's state for the pages."""

    secret: bytes
    large: Thumbnails


_lock = threading.Lock()


def web(request: Request) -> Web:
    """The app's :class:`Web`, made on first use (the secret read or created then)."""
    state = request.app.state
    with _lock:
        if getattr(state, "web", None) is None:
            svc = state.service
            folder = svc.index.folder
            state.web = Web(sessions.load_secret(folder), Thumbnails(folder, LARGE_SIDE))
        return state.web


def moderation(request: Request) -> ModerationDB:
    """The moderation database for a cases page; :class:`NotFoundError` without
    one (sign-in and the artist's works still work)."""
    return service(request).moderation_or_404()


def service(request: Request) -> "Service":
    return request.app.state.service


class NoSession(Exception):
    """The request has no valid session: the page sends it to sign in."""


def signed_in(request: Request) -> Session | None:
    """The request's session: its cookie signed, not expired, and its token
    still naming the same person (else None)."""
    w, svc = web(request), service(request)
    s = sessions.read(w.secret, request.cookies.get(sessions.COOKIE))
    if s is None or not sessions.still_valid(s, svc.settings.admin_token, svc.moderation, svc.index):
        return None
    return s


def need(request: Request, roles: tuple[str, ...]) -> Session:
    """The session, when its role is one of ``roles``; :class:`NoSession` or
    :class:`ForbiddenError` otherwise."""
    s = signed_in(request)
    if s is None:
        raise NoSession()
    if s.who.role not in roles:
        where = "the artist page is for artists" if roles == ("artist",) else "cases are for moderators"
        raise ForbiddenError(f"{where}; you are signed in as {s.who.role} {s.who.name}")
    return s


async def checked_form(request: Request, s: Session | None, expected: str | None = None) -> FormData:
    """The POSTed form (within the service's limits), after its CSRF token is
    checked against the session's (or ``expected``): a form without it is refused."""
    settings = service(request).settings
    try:
        form = await request.form(max_files=settings.request_files + 1, max_fields=settings.form_fields,
                                  max_part_size=settings.form_field_bytes)
    except MultiPartException as exc:
        raise InputError("unreadable form (" + exc.message + ")") from None
    if not sessions.csrf_ok(expected if s is None else s.csrf, form.get("csrf")):
        raise ForbiddenError("this form has expired or did not come from this site: reload the page and try again")
    return form


@lru_cache(maxsize=1)
def _env() -> "Environment":
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["age"] = age_text
    env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t)) if t else ""
    return env


def age_text(t: float, now: float | None = None) -> str:
    """How long ago ``t`` was, in the largest whole unit: ``5 min ago``, ``3 h ago``, ``2 days ago``, ``just now``."""
    s = max(0.0, (time.time() if now is None else now) - t)
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            n = int(s // size)
            return f"{n} {unit}{'s' if unit == 'day' and n != 1 else ''} ago"
    return "just now"


def render(name: str, s: Session | None, status: int = 200, **ctx: Any) -> HTMLResponse:
    """Template ``name`` with the session's user and CSRF token, as a page."""
    html = _env().get_template(name).render(me=s.who if s else None, csrf=s.csrf if s else "", **ctx)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def error_page(exc: MimicryError, s: Session | None) -> HTMLResponse:
    return render("error.html.j2", s, exc.http_status, code=exc.code, message=clipped(str(exc)))


def redirect(url: str) -> RedirectResponse:
    """A 303 to ``url`` (after a POST, the browser GETs it)."""
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def page(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A page route: no session redirects to ``/``; a :class:`MimicryError`
    becomes an error page with its status (the signed-in user's, if any)."""

    def handled(request: Request, exc: Exception) -> Response:
        if isinstance(exc, NoSession):
            return redirect("/")
        if isinstance(exc, MimicryError):
            try:
                s = signed_in(request)
            except MimicryError:
                s = None
            return error_page(exc, s)
        raise exc

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(request: Request, *args: Any, **kwargs: Any) -> Response:
            try:
                return await fn(request, *args, **kwargs)
            except (NoSession, MimicryError) as exc:
                return handled(request, exc)
        return run_async

    @functools.wraps(fn)
    def run(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return fn(request, *args, **kwargs)
        except (NoSession, MimicryError) as exc:
            return handled(request, exc)
    return run
