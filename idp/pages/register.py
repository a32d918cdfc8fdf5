"""Registration (``email``, ``password``, ``password_confirm``, optional ``name`` and ``phone``),
the emailed link that verifies the address, and asking for a new link (``email``).

Registering sets a "registration browser" cookie whose digest the new account keeps: its links,
the first and any sent again whoever asks, sign the person in only in that browser. Elsewhere a
link asks for the password chosen at registration (``password``, POSTed back with the link's
``token``) and then only verifies the address, so someone who registered another person's address
cannot have that person verify it. A new and a taken address get the same page, status and
cookie; known and unknown addresses asking for a new link get the same page.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .. import audit as audit_log
from ..accounts import links, registration
from ..accounts.errors import AccountError
from ..accounts.reauthentication import NotReauthenticated, WrongPassword
from ..accounts.users import UserError, normalize_email
from ..audit import Event
from ..oauth.authorization import load_pending
from ..oauth.errors import BadAuthorizationTarget
from ..security.digests import new_token, token_digest
from ..security.rate_limits import Limit
from ..web.browser import browser_cookie, set_browser_cookie
from ..web.messages import message
from ..web.rendering import error_page, render
from ..web.request import audit, context, transaction
from ..web.throttling import throttled
from .forms import form_page, posted_form
from .signin import complete_sign_in, start_second_factor

BROWSER_COOKIE = "idp_registration"
EXPIRED_FORM = "This form has expired. Please try again."
NOT_FOUND = "This page does not exist."
NOT_AN_EMAIL = "That is not an email address."
BAD_LINK = (
    "This link to verify your email address is not valid: it was already used, it expired, or it is "
    "incomplete. Sign in to ask for a new one."
)
WRONG_PASSWORD = "That is not the password chosen when this account was registered."
RESENT = "If an account with this address is waiting for verification, we sent it a new link."


async def verify_email(request: Request) -> Response:
    """GET follows the emailed link; POST sends the password the link asks for in another browser."""
    if request.method == "HEAD":
        return Response(headers={"Cache-Control": "no-store"})
    form = await posted_form(request)
    if isinstance(form, Response):
        return form
    return await run_in_threadpool(_verify_email, request, form)


def _browser_id(request: Request) -> str:
    """This browser's registration cookie value, or a new one."""
    current = browser_cookie(request, BROWSER_COOKIE)
    return current if current and 20 <= len(current) <= links.MAX_TOKEN else new_token()


def _set_browser_cookie(request: Request, response: Response, browser_id: str) -> Response:
    set_browser_cookie(request, response, BROWSER_COOKIE, browser_id, max_age=registration.LINK_LIFETIME)
    return response


@form_page
def register(request: Request, form: dict[str, str]) -> Response:
    if not context(request).settings.self_registration:
        return error_page(request, NOT_FOUND, status_code=404)
    ctx = context(request)
    request_id = (form.get("request") if request.method == "POST" else request.query_params.get("request")) or None
    with transaction(request) as db:
        client = None
        if request_id:
            try:
                _, client, _ = load_pending(db, request_id)
            except BadAuthorizationTarget as exc:
                return error_page(request, str(exc))
        page = {
            "request_id": request_id,
            "client_name": client.name if client else None,
            "email": form.get("email", ""),
            "name": form.get("name", ""),
            "phone": form.get("phone", ""),
            "min_length": ctx.settings.password_min_length,
        }
        if request.method != "POST":
            return render(request, "register.html", page)
        if not context(request).csrf.valid(request, form.get("csrf_token")):
            return render(request, "register.html", {**page, "error": EXPIRED_FORM}, status_code=400)
        if refused := throttled(request, Limit.REGISTRATION, db=db):
            return refused
        browser_id = _browser_id(request)
        application = registration.Application(
            email=form.get("email", ""),
            password=form.get("password", ""),
            password_confirm=form.get("password_confirm", ""),
            name=form.get("name", ""),
            phone=form.get("phone", ""),
        )
        try:
            registered = registration.register(
                ctx,
                db,
                application,
                authorization_request_id=request_id,
                browser_hash=token_digest(browser_id),
            )
        except registration.RegistrationError as exc:
            db.rollback()
            return render(request, "register.html", {**page, "error": str(exc)}, status_code=400)
        except AccountError as exc:
            db.rollback()
            return render(request, "register.html", {**page, "error": message(exc)}, status_code=400)
        email = registered.user.email
        assert email is not None
        detail: dict[str, object] = {
            "address": registration.address_key(ctx.secret_key, email),
            "recipient": audit_log.mask(email),
            "account": "new" if registered.created else "existing",
        }
        if registered.phone_dropped:
            detail["phone"] = "left_off_taken"
        audit(
            request,
            db,
            registration.REGISTRATION_EVENT,
            outcome="success" if registered.created else "failure",
            user_id=registered.user.id,
            client_id=client.id if client else None,
            detail=detail,
        )
        db.commit()
    response = render(request, "register_done.html", {"email": email, "request_id": request_id})
    return _set_browser_cookie(request, response, browser_id)


def _verify_email(request: Request, form: dict[str, str]) -> Response:
    ctx = context(request)
    posted = request.method == "POST"
    token = form.get("token") if posted else request.query_params.get("token")
    password = form.get("password", "") if posted else None
    with transaction(request) as db:
        if posted and not context(request).csrf.valid(request, form.get("csrf_token")):
            if not registration.is_live(db, token):
                return error_page(request, BAD_LINK)
            return _password_page(request, token, EXPIRED_FORM)
        try:
            verified = registration.verify(
                db, ctx.settings, ctx.secret_key, token, browser_cookie(request, BROWSER_COOKIE), password
            )
        except registration.PasswordNeeded:
            db.rollback()
            return _password_page(request, token)
        except NotReauthenticated as exc:
            audit(request, db, Event.EMAIL_VERIFIED, outcome="failure", detail={"reason": exc.reason})
            db.commit()
            return _password_page(request, token, WRONG_PASSWORD if isinstance(exc, WrongPassword) else message(exc))
        if verified is None:
            audit(request, db, Event.EMAIL_VERIFIED, outcome="failure", detail={"reason": "invalid_link"})
            db.commit()
            return error_page(request, BAD_LINK)
        user = verified.user
        request_id = _still_pending(db, verified.authorization_request_id)
        audit(
            request,
            db,
            Event.EMAIL_VERIFIED,
            outcome="success",
            user_id=user.id,
            detail={"signed_in": verified.same_browser},
        )
        if not verified.same_browser:
            db.commit()
            return render(request, "email_verified.html", {"request_id": request_id})
        if user.mfa_method:
            return start_second_factor(request, db, user, authorization_request_id=request_id)
        return complete_sign_in(
            request, db, user, amr=["pwd"], authorization_request_id=request_id, auth_time=verified.registered_at
        )


def _password_page(request: Request, token: str | None, error: str | None = None) -> Response:
    """The form asking for the password chosen at registration, for a link opened in another browser."""
    return render(
        request,
        "verify_email_password.html",
        {"token": token or "", "error": error},
        status_code=400 if error else 200,
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


@form_page
def resend_verification(request: Request, form: dict[str, str]) -> Response:
    """Known, unknown, verified or not: the same page; the wait counts requests, not links sent."""
    ctx = context(request)
    request_id = form.get("request") or None
    page = {"email": form.get("email", ""), "request_id": request_id}
    if not context(request).csrf.valid(request, form.get("csrf_token")):
        return render(request, "register_done.html", {**page, "error": EXPIRED_FORM}, status_code=400)
    if refused := throttled(request, Limit.VERIFICATION):
        return refused
    try:
        email = normalize_email(form.get("email", ""))
    except UserError:
        return render(request, "register_done.html", {**page, "error": NOT_AN_EMAIL}, status_code=400)
    key = registration.address_key(ctx.secret_key, email)
    with transaction(request) as db:
        request_id = _still_pending(db, request_id)
        page = {"email": email, "request_id": request_id}
        wait = registration.requests_wait(ctx, Limit.VERIFICATION_ADDRESS, key)
        if wait:
            audit(
                request,
                db,
                registration.RESEND_EVENT,
                outcome="failure",
                detail={"recipient": audit_log.mask(email), "reason": "rate_limited"},
            )
            db.commit()
            message = f"You asked for several links in a short time. You can ask again in {wait} seconds."
            return render(request, "register_done.html", {**page, "error": message, "wait": wait}, status_code=429)
        user = registration.resend(db, ctx.settings, ctx.secret_key, email, authorization_request_id=request_id)
        audit(
            request,
            db,
            registration.RESEND_EVENT,
            outcome="success",
            user_id=user.id if user else None,
            detail={"address": key, "recipient": audit_log.mask(email), "sent": user is not None},
        )
        db.commit()
    return render(request, "register_done.html", {**page, "notice": RESENT})
