"""The single sign-on cookie of a browser and the session it names."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ..security.cookies import cookie_name
from ..sso import ActiveSession, find_session
from .request import context

SESSION_COOKIE = "idp_session"


def browser_cookie(request: Request, base: str) -> str | None:
    """The value of one of idp's cookies, under its ``__Host-`` name when the issuer is https."""
    return request.cookies.get(cookie_name(base, context(request).settings.secure_cookies))


def set_browser_cookie(request: Request, response: Response, base: str, value: str, *, max_age: int) -> None:
    """Every idp cookie is HttpOnly and SameSite=Lax: sent on top-level redirects from relying apps,
    so that ``prompt=none`` works, and never on cross-site POSTs; Secure when the issuer is https."""
    secure = context(request).settings.secure_cookies
    response.set_cookie(
        cookie_name(base, secure), value, max_age=max_age, httponly=True, samesite="lax", secure=secure, path="/"
    )


def clear_browser_cookie(request: Request, response: Response, base: str) -> None:
    """A deletion carries the same attributes, or browsers refuse it for a ``__Host-`` cookie."""
    secure = context(request).settings.secure_cookies
    response.delete_cookie(cookie_name(base, secure), path="/", httponly=True, samesite="lax", secure=secure)


def current_session(request: Request, db: Session) -> ActiveSession | None:
    """The browser's session if it may still sign its person in: live, and not idle too long. Only
    a lookup: serving the person a request notes its use (:func:`~idp.sso.note_use`)."""
    idle_timeout = context(request).settings.session_idle_ttl
    return find_session(db, browser_cookie(request, SESSION_COOKIE), idle_timeout=idle_timeout)


def session_to_end(request: Request, db: Session) -> ActiveSession | None:
    """The browser's live session, idle or not: signing out of an idle session still ends it, and
    with it the grants made in it."""
    return find_session(db, browser_cookie(request, SESSION_COOKIE), idle_timeout=None)


def set_session_cookie(request: Request, response: Response, token: str, lifetime: int) -> None:
    """The cookie lasts as long as its session (``lifetime`` seconds)."""
    set_browser_cookie(request, response, SESSION_COOKIE, token, max_age=lifetime)


def clear_session_cookie(request: Request, response: Response) -> None:
    clear_browser_cookie(request, response, SESSION_COOKIE)
