"""The end of every way of signing in: a new single sign-on session, then back to the app.

Password, second factor, one-time code and a verified email link all finish here, so a sign-in
always replaces the browser's previous session and always continues the authorization request
that sent the person to us.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts import challenges
from ..oauth.authorization import AuthorizationError, AuthorizationParams, decide, load_pending
from ..oauth.errors import BadAuthorizationTarget
from ..sso import ActiveSession, end_session, start_session
from ..storage import Client, User
from ..web.browser import browser_cookie, clear_browser_cookie, session_to_end, set_browser_cookie, set_session_cookie
from ..web.locale import note_ui_locales
from ..web.rendering import authorization_response, error_page, next_step
from ..web.request import context, request_address
from .surface import Visitor

PENDING_COOKIE = "idp_signin"
REMEMBER_COOKIE = "idp_remember"
"""Set while a sign-in whose person ticked "Keep me signed in" waits for its second step."""


@dataclass(frozen=True)
class Target:
    """The authorization request a sign-in page serves (none: the person came on their own),
    with its client and parameters."""

    request_id: str | None = None
    client: Client | None = None
    params: AuthorizationParams | None = None


def request_id(call: Visitor) -> str | None:
    """The authorization request named by the form posted back, or by the query of a page shown."""
    return (call.values.get("request") if call.unsafe else call.request.query_params.get("request")) or None


def target(call: Visitor) -> Target:
    """The authorization request of :func:`request_id`, loaded; raises
    :class:`~idp.oauth.errors.BadAuthorizationTarget` for one that is unknown or expired."""
    named = request_id(call)
    if named is None:
        return Target()
    _, client, params = load_pending(call.db, named)
    note_ui_locales(call.request, params.ui_locales)
    return Target(named, client, params)


def waiting_target(call: Visitor, authorization_request_id: str | None) -> Target:
    """The request a sign-in under way serves, if that request still waits (its pages name its
    client, fill in its ``login_hint`` and speak its ``ui_locales``); none otherwise."""
    if authorization_request_id is None:
        return Target()
    try:
        _, client, params = load_pending(call.db, authorization_request_id)
    except BadAuthorizationTarget:
        return Target()
    note_ui_locales(call.request, params.ui_locales)
    return Target(authorization_request_id, client, params)


def pending_sign_in(request: Request) -> str | None:
    """The cookie naming this browser's sign-in under way, if any."""
    return browser_cookie(request, PENDING_COOKIE)


def set_pending_cookie(request: Request, response: Response, value: str) -> None:
    set_browser_cookie(request, response, PENDING_COOKIE, value, max_age=challenges.LIFETIME)


def session_lifetime(request: Request, remember: bool) -> int:
    """``IDP_REMEMBER_TTL`` for a person who asked to stay signed in, here or at the first step of
    this sign-in; ``IDP_SESSION_TTL`` otherwise."""
    settings = context(request).settings
    remembered = remember or browser_cookie(request, REMEMBER_COOKIE) == "yes"
    return settings.remember_ttl if remembered else settings.session_ttl


def start_second_factor(
    request: Request,
    db: Session,
    user: User,
    *,
    authorization_request_id: str | None,
    first_factor: tuple[str, ...] = ("pwd",),
    remember: bool = False,
) -> Response:
    """A first factor was right (a password unless ``first_factor`` says otherwise) and a second
    factor is due: on to the code page. Whether to keep the person signed in waits in a cookie
    as long as the sign-in does: it is theirs to choose, so nothing needs to vouch for it."""
    _, cookie = challenges.start_second_factor(context(request), db, user, authorization_request_id, list(first_factor))
    response = RedirectResponse("/login/verify", status_code=303)
    set_pending_cookie(request, response, cookie)
    if remember:
        set_browser_cookie(request, response, REMEMBER_COOKIE, "yes", max_age=challenges.LIFETIME)
    return response


def complete_sign_in(
    request: Request,
    db: Session,
    user: User,
    *,
    amr: list[str],
    authorization_request_id: str | None,
    auth_time: int | None = None,
    remember: bool = False,
) -> Response:
    """Start the session, continue the authorization request (or go to /account), record it. A
    person who asked to stay signed in (``remember``, or at the first step) gets a longer session
    (:func:`session_lifetime`).

    ``amr`` names each method once (RFC 8176): an email code followed by an authenticator code
    are both ``otp``. A sign-in whose authentication happened earlier (``auth_time``) is not one
    made for the request: the request's ``max_age`` and ``prompt=login`` judge it as they judge an
    older session."""
    amr = list(dict.fromkeys(amr))
    lifetime = session_lifetime(request, remember)
    previous = session_to_end(request, db)
    if previous is not None:
        end_session(db, previous.session.id)
    response: Response | None = None
    target = None
    if authorization_request_id:
        try:
            target = load_pending(db, authorization_request_id)
        except BadAuthorizationTarget as exc:
            response = error_page(request, str(exc))
    session, cookie = start_session(
        db,
        user,
        amr=amr,
        ip=request_address(request),
        user_agent=request.headers.get("user-agent"),
        auth_time=auth_time,
        lifetime=lifetime,
        client_id=target[1].id if target else None,
    )
    if target is not None:
        pending, client, params = target
        if auth_time is None:
            pending.session_id = session.id
        try:
            active = ActiveSession(session, user)
            terms_version = context(request).settings.terms_version
            response = next_step(request, decide(db, client, params, active, pending, terms_version=terms_version))
        except AuthorizationError as exc:
            response = authorization_response(request, exc.response)
        except BadAuthorizationTarget as exc:
            response = error_page(request, str(exc))
    response = response or RedirectResponse("/account", status_code=303)
    set_session_cookie(request, response, cookie, lifetime)
    clear_browser_cookie(request, response, PENDING_COOKIE)
    if browser_cookie(request, REMEMBER_COOKIE) is not None:
        clear_browser_cookie(request, response, REMEMBER_COOKIE)
    return response
