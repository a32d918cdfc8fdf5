"""The single sign-on cookie of a browser, and the request facts a session records."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from .. import audit as audit_log
from ..security.client_address import client_address
from ..security.cookies import cookie_name
from ..sessions import SESSION_LIFETIME, ActiveSession, find_session

BASE_NAME = "idp_session"


def session_cookie(request: Request) -> str:
    return cookie_name(BASE_NAME, request.app.state.ctx.settings.secure_cookies)


def current_session(request: Request, db: Session) -> ActiveSession | None:
    return find_session(db, request.cookies.get(session_cookie(request)))


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    """HttpOnly and SameSite=Lax: sent on top-level redirects from relying apps, so that
    ``prompt=none`` works, and never on cross-site POSTs."""
    response.set_cookie(
        session_cookie(request),
        token,
        max_age=SESSION_LIFETIME,
        httponly=True,
        samesite="lax",
        secure=request.app.state.ctx.settings.secure_cookies,
        path="/",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        session_cookie(request),
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.app.state.ctx.settings.secure_cookies,
    )


def request_address(request: Request) -> str | None:
    return client_address(request, request.app.state.ctx.settings.trusted_proxies)


def audit(
    request: Request,
    db: Session,
    event: str,
    *,
    outcome: str,
    user_id: str | None = None,
    client_id: str | None = None,
    detail: dict[str, object] | None = None,
) -> None:
    """An audit event with the request's address and user agent, in the caller's transaction."""
    audit_log.record(
        db,
        event,
        outcome=outcome,
        user_id=user_id,
        client_id=client_id,
        ip=request_address(request),
        user_agent=request.headers.get("user-agent"),
        detail=detail,
    )
