"""Registration (``email``, ``password``, ``password_confirm``, optional ``name``, ``given_name``,
``family_name`` and ``phone``), the emailed link that verifies the address, and asking for a new
link (``email``).

Registering sets a "registration browser" cookie whose digest the new account keeps: its links,
the first and any sent again whoever asks, sign the person in only in that browser, and continue
only the authorization request it registered from. Elsewhere a link asks for the password chosen
at registration (``password``, POSTed back with the link's ``token``) and then only verifies the
address, so someone who registered another person's address cannot have that person verify it.
A new and a taken address get the same page, status and cookie; known and unknown addresses asking
for a new link get the same page.
"""

from __future__ import annotations

from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from ..accounts import links, registration
from ..accounts.errors import Code, InvalidEmail
from ..accounts.users import UserError, normalize_email
from ..catalogs import N_
from ..oauth.authorization import load_pending
from ..oauth.errors import BadAuthorizationTarget
from ..security.digests import new_token, token_digest
from ..security.rate_limits import Limit
from ..web.branding import ClientBrand
from ..web.browser import browser_cookie, set_browser_cookie
from ..web.locale import language, translate
from ..web.messages import message
from ..web.pipeline import Needs
from ..web.rendering import error_page, message_page, render
from .signin import complete_sign_in, start_second_factor, target
from .signin import request_id as serving_request
from .surface import ERROR_PAGE, Shown, Visit, Visitor, visit

BROWSER_COOKIE = "idp_registration"
NOT_FOUND = N_("This page does not exist.")
RESENT = N_("If an account with this address is waiting for verification, we sent it a new link.")


def _browser_id(call: Visitor) -> str:
    """This browser's registration cookie value, or a new one."""
    current = browser_cookie(call.request, BROWSER_COOKIE)
    return current if current and 20 <= len(current) <= links.MAX_TOKEN else new_token()


def _register_page(call: Visitor, shown: Shown) -> Response:
    settings = call.ctx.settings
    if not settings.self_registration:
        return error_page(call.request, NOT_FOUND, status_code=404)
    try:
        serving = target(call)
    except BadAuthorizationTarget as exc:
        return error_page(call.request, str(exc))
    page = {
        "request_id": serving.request_id,
        "client": ClientBrand.of(serving.client),
        "email": call.values.get("email", ""),
        "name": call.values.get("name", ""),
        "given_name": call.values.get("given_name", ""),
        "family_name": call.values.get("family_name", ""),
        "phone": call.values.get("phone", ""),
        "min_length": settings.password_min_length,
        "terms_url": settings.terms_url,
        "error": shown.error,
    }
    return render(call.request, "register.html", page, status_code=shown.status_code)


@visit(Visit(_register_page), Needs(limits=(Limit.REGISTRATION,), lock=False))
def register(call: Visitor) -> Response:
    """With password sign-in off an account has no password to choose: the code page registers,
    as a first sign-in by code makes the account, its address or number proven by the code."""
    settings = call.ctx.settings
    if settings.self_registration and not settings.password_sign_in:
        named = serving_request(call)
        return RedirectResponse("/login/code" + (f"?{urlencode({'request': named})}" if named else ""), status_code=303)
    if not call.unsafe or not settings.self_registration:
        return _register_page(call, Shown())
    serving = target(call)
    browser_id = _browser_id(call)
    values = call.values
    application = registration.Application(
        email=values.get("email", ""),
        password=values.get("password", ""),
        password_confirm=values.get("password_confirm", ""),
        name=values.get("name", ""),
        given_name=values.get("given_name", ""),
        family_name=values.get("family_name", ""),
        phone=values.get("phone", ""),
        accepted_terms=values.get("accept_terms") == "yes",
    )
    registered = registration.register(
        call.ctx,
        call.db,
        application,
        authorization_request_id=serving.request_id,
        browser_hash=token_digest(browser_id),
        client_id=serving.client.id if serving.client else None,
    )
    page = {"email": registered.user.email, "request_id": serving.request_id}
    response = render(call.request, "register_done.html", page)
    set_browser_cookie(call.request, response, BROWSER_COOKIE, browser_id, max_age=registration.LINK_LIFETIME)
    return response


def _password_page(call: Visitor, shown: Shown) -> Response:
    """The form asking for the password chosen at registration, for a link opened in another
    browser; the error page once the link is spent."""
    token = call.values.get("token") if call.unsafe else call.request.query_params.get("token")
    if shown.error and not registration.is_live(call.db, token):
        return message_page(call.request, message(registration.InvalidLink(), language(call.request)))
    page = {"token": token or "", "error": shown.error}
    return render(call.request, "verify_email_password.html", page, status_code=shown.status_code)


@visit(Visit(_password_page, elsewhere={Code.INVALID_LINK: ERROR_PAGE}))
def verify_email(call: Visitor) -> Response:
    """GET follows the emailed link; POST sends the password the link asks for in another browser.
    HEAD (a mail scanner's) spends nothing."""
    if call.request.method == "HEAD":
        return Response(headers={"Cache-Control": "no-store"})
    token = call.values.get("token") if call.unsafe else call.request.query_params.get("token")
    password = call.values.get("password", "") if call.unsafe else None
    cookie = browser_cookie(call.request, BROWSER_COOKIE)
    try:
        verified = registration.verify(call.ctx, call.db, token, cookie, password)
    except registration.PasswordNeeded:
        return _password_page(call, Shown())
    user = verified.user
    request_id = _still_pending(call.db, verified.authorization_request_id)
    if not verified.same_browser:
        return render(call.request, "email_verified.html", {"request_id": request_id})
    if user.mfa_method:
        return start_second_factor(call.request, call.db, user, authorization_request_id=request_id)
    return complete_sign_in(
        call.request, call.db, user, amr=["pwd"], authorization_request_id=request_id, auth_time=verified.registered_at
    )


def _still_pending(db: Session, request_id: str | None) -> str | None:
    """The authorization request to continue, unless it expired while the email was on its way."""
    if not request_id:
        return None
    try:
        load_pending(db, request_id)
    except BadAuthorizationTarget:
        return None
    return request_id


def _resend_page(call: Visitor, shown: Shown) -> Response:
    page = {
        "email": call.values.get("email", ""),
        "request_id": _still_pending(call.db, call.values.get("request") or None),
        "error": shown.error,
        "notice": shown.notice,
        "wait": shown.wait,
    }
    return render(call.request, "register_done.html", page, status_code=shown.status_code)


@visit(Visit(_resend_page), Needs(limits=(Limit.VERIFICATION,), lock=False))
def resend_verification(call: Visitor) -> Response:
    """Known, unknown, verified or not: the same page; the wait counts requests, not links sent.
    The request the form names only leads the asker's own page back to it: the link continues the
    one the registering browser came from."""
    try:
        email = normalize_email(call.values.get("email", ""))
    except UserError:
        raise InvalidEmail("not_an_address") from None
    call.values["email"] = email
    registration.resend(call.ctx, call.db, email)
    return _resend_page(call, Shown(notice=translate(call.request, RESENT)))
