"""Signing in and out: ``/`` (the sign-in page, or where to go when signed
in), ``POST /signin`` (a token: the admin's, a moderator's or an artist's),
``POST /signout``, and the pages' one stylesheet, ``/web.css``."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mimicry.errors import UnauthorizedError
from mimicry.faces.web import session as sessions
from mimicry.faces.web.pages import HERE, checked_form, page, redirect, render, service, signed_in, web

router = APIRouter(include_in_schema=False)

#: Notes the sign-in page can show after a redirect (by key: no text from the URL is shown).
NOTES = {"signed-out": "You are signed out.", "withdrawn": "Your works and your registration are removed."}


#: The stylesheet's parts: the reports' (one look for reports and pages), then the pages' own.
CSS_FILES = (HERE.parent.parent / "report" / "static" / "report.css", HERE / "static" / "web.css")


def home_of(role: str) -> str:
    return "/artist" if role == "artist" else "/cases"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/")
@page
def signin_page(request: Request, note: str = "") -> Response:
    """The sign-in form (with its CSRF token in a cookie of its own), or, when
    signed in, who you are and where to go."""
    s = signed_in(request)
    pre = request.cookies.get(sessions.PRE_COOKIE) or secrets.token_urlsafe(24)
    out = render("signin.html.j2", s, note=NOTES.get(note, ""), signin_csrf=pre, home=home_of(s.who.role) if s else "")
    if s is None:
        out.set_cookie(sessions.PRE_COOKIE, pre, **sessions.cookie_args(_secure(request), 3600))
    return out


@router.post("/signin")
@page
async def signin(request: Request) -> Response:
    """Signs in with a token: a session cookie, then the queue (moderators, the
    admin) or the artist page (artists). A token that is nobody's is a 401 page."""
    form = await checked_form(request, None, request.cookies.get(sessions.PRE_COOKIE))
    token = str(form.get("token") or "").strip()
    svc, w = service(request), web(request)
    who = await run_in_threadpool(sessions.who_is, svc, token)
    if who is None:
        raise UnauthorizedError("this token belongs to no admin, moderator or artist")
    value, s = sessions.issue(w.secret, who, token)
    out = redirect(home_of(who.role))
    out.set_cookie(sessions.COOKIE, value, **sessions.cookie_args(_secure(request)))
    out.delete_cookie(sessions.PRE_COOKIE, path="/")
    return out


@router.post("/signout")
@page
async def signout(request: Request) -> Response:
    """Ends the session (its cookie is cleared) and goes back to ``/``."""
    s = signed_in(request)
    if s is not None:
        await checked_form(request, s)
    out = redirect("/?note=signed-out")
    out.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="strict")
    return out


@router.get("/web.css")
def stylesheet() -> Response:
    """The pages' stylesheet: the reports' own, then the pages' additions."""
    css = "\n".join(p.read_text(encoding="utf-8") for p in CSS_FILES)
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300"})
