"""The signed-in person's own page: profile, phone verification and removal, sessions, password
(changing it, or setting a first one with an emailed code). The email address changes on a page of
its own (:mod:`idp.pages.account_email`), which shares :func:`signed_in` and :func:`done`.

Each form posts to a path of its own. What worked redirects back to ``/account?done=<what>``
(post/redirect/get: reloading never submits twice); a refusal shows the page again with the
message next to the form it concerns. A browser without a session goes to ``/login``.

A form posted locks the person's row before anything else (:func:`lock_person`), so the actions of
two browsers, or of a browser and a reset link, run one after the other; and one whose session the
other ended meanwhile goes to ``/login`` instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts import email_change, first_password, otp, profile, sms_budget
from ..accounts.codes_vocabulary import Channel
from ..accounts.password_policy import PasswordRejected
from ..accounts.phones import PhoneError
from ..accounts.reauthentication import NotReauthenticated
from ..accounts.recovery import change_password as change_password_service
from ..accounts.users import lock_user
from ..audit import Event, mask
from ..security.rate_limits import Limit
from ..sso import ActiveSession
from ..storage import BrowserSession, now
from ..web.browser import clear_session_cookie, current_session
from ..web.rendering import error_page, render
from ..web.request import audit, context, request_address
from ..web.throttling import throttled
from .forms import posted_form

EXPIRED_FORM = "This form has expired. Please try again."
WRONG_CODE = "That code is not right, or it has expired. Check it, or ask for a new one."
PHONE_UNAVAILABLE = "This phone number cannot be added to your account."
PASSWORDS_DIFFER = "The two new passwords are not the same."
NO_SUCH_SESSION = "There is no such session."
NOTICES = {
    "name": "Your name is saved.",
    "email": "We sent a link to the new address. Your email address changes when you open it.",
    "phone": "Your phone number is verified.",
    "phone_removed": "Your phone number is removed: codes no longer go to it, and it no longer signs you in.",
    "password_set": "Your password is set: you can sign in with it from now on.",
    "session": "The session has ended.",
    "others": "Your other sessions have ended.",
    "others_phone": (
        "Your other sessions have ended, and your phone number was taken off your account: it was added after "
        "you last signed in with your password, so it no longer signs you in. If it is yours, add it again."
    ),
    "password": "Your password is changed. Your other sessions have ended.",
}

Handler = Callable[[Request, Session, ActiveSession, dict[str, str]], Response]
Endpoint = Callable[[Request], Awaitable[Response]]
Renderer = Callable[..., Response]


def signed_in(on_expired: Renderer) -> Callable[[Handler], Endpoint]:
    """Make ``handler`` an endpoint for a signed-in person: it reads a POST's form within limits,
    sends a browser without a session to ``/login``, and answers a POST without a valid CSRF token
    with ``on_expired``."""

    def wrap(handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            form = await posted_form(request)
            if isinstance(form, Response):
                return form
            return await run_in_threadpool(_run, request, form, handler, on_expired)

        return endpoint

    return wrap


def _run(request: Request, form: dict[str, str], handler: Handler, on_expired: Renderer) -> Response:
    with context(request).db() as db:
        active = current_session(request, db)
        if active is None:
            return RedirectResponse("/login", status_code=303)
        if request.method == "POST":
            if not context(request).csrf.valid(request, form.get("csrf_token")):
                return on_expired(request, db, active, error=EXPIRED_FORM, status_code=400)
            if not lock_person(db, active):
                return RedirectResponse("/login", status_code=303)
        return handler(request, db, active, form)


def lock_person(db: Session, active: ActiveSession) -> bool:
    """Lock the signed-in person's row, first of all; whether their session still lives.

    Finding the session may have noted its last-seen time, a write still pending: it must come
    after the person's lock, or this request would hold the session row while waiting for the
    person, as a reset holding the person waits to end that session. Once the lock is ours, any
    action that got it first is done, and may have ended this session or disabled the account.
    """
    with db.no_autoflush:
        user = lock_user(db, active.user.id)
        live = db.scalar(
            select(BrowserSession.id).where(
                BrowserSession.id == active.session.id,
                BrowserSession.ended_at.is_(None),
                BrowserSession.expires_at > now(),
            )
        )
    return user is not None and not user.disabled and live is not None


def _when(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _sentence(message: str) -> str:
    return f"{message[:1].upper()}{message[1:]}."


def done(what: str) -> Response:
    return RedirectResponse(f"/account?done={what}", status_code=303)


def _account_page(
    request: Request,
    db: Session,
    active: ActiveSession,
    *,
    error: str | None = None,
    section: str | None = None,
    notice: str | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    """``section`` names the form an ``error`` belongs to; ``values`` refills what was typed."""
    context: dict[str, Any] = {
        "user": active.user,
        "sessions": profile.list_sessions(db, active.user, active.session.id),
        "pending_phone": profile.pending_phone(db, active.user),
        "pending_email": email_change.pending_email(db, active.user),
        "when": _when,
        "error": error,
        "section": section,
        "notice": notice,
        "values": values or {},
    }
    return render(request, "account.html", context, status_code=status_code)


def _verify_page(
    request: Request,
    db: Session,
    active: ActiveSession,
    *,
    error: str | None = None,
    notice: str | None = None,
    wait: int | None = None,
    status_code: int = 200,
) -> Response:
    phone = profile.pending_phone(db, active.user)
    if phone is None:
        return RedirectResponse("/account", status_code=303)
    context = {"phone": phone, "error": error, "notice": notice, "wait": wait}
    return render(request, "account_phone_verify.html", context, status_code=status_code)


def _wait_message(wait: int) -> str:
    return f"Too many codes were sent to this number. You can ask for a new one in {wait} seconds."


@signed_in(_account_page)
def account(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    db.commit()
    return _account_page(request, db, active, notice=NOTICES.get(request.query_params.get("done", "")))


@signed_in(_account_page)
def update_name(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    try:
        profile.update_name(db, active.user, form.get("name", ""))
    except profile.ProfileError as exc:
        db.rollback()
        values = {"name": form.get("name", "")}
        return _account_page(request, db, active, error=str(exc), section="name", values=values, status_code=400)
    audit(request, db, Event.PROFILE_UPDATED, outcome="success", user_id=active.user.id, detail={"fields": ["name"]})
    db.commit()
    return done("name")


@signed_in(_account_page)
def add_phone(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    """Send a code to the new number once the person gave their current password (an account
    without one: signed in a few minutes ago); the number is stored only once the code comes back."""
    if refused := throttled(request, Limit.VERIFICATION, db=db):
        return refused
    ctx = context(request)
    values = {"phone": form.get("phone", "")}
    try:
        phone = profile.start_phone_verification(
            ctx, db, active.user, form.get("phone", ""), form.get("current_password", ""), active.session.auth_time
        )
    except NotReauthenticated as exc:
        audit(
            request,
            db,
            Event.CODE_SENT,
            outcome="failure",
            user_id=active.user.id,
            detail={"channel": Channel.SMS, "purpose": profile.VERIFY_PHONE, "reason": exc.reason},
        )
        db.commit()
        return _account_page(request, db, active, error=str(exc), section="phone", values=values, status_code=400)
    except PhoneError as exc:
        return _account_page(
            request, db, active, error=_sentence(str(exc)), section="phone", values=values, status_code=400
        )
    except profile.ProfileError as exc:
        return _account_page(request, db, active, error=str(exc), section="phone", values=values, status_code=400)
    except otp.ResendTooSoon as exc:
        db.rollback()
        return _account_page(
            request, db, active, error=_wait_message(exc.wait), section="phone", values=values, status_code=429
        )
    except sms_budget.SmsRefused as exc:
        db.rollback()
        status = 400 if exc.retry_after is None else 429
        return _account_page(request, db, active, error=str(exc), section="phone", values=values, status_code=status)
    audit(
        request,
        db,
        Event.CODE_SENT,
        outcome="success",
        user_id=active.user.id,
        detail={"channel": Channel.SMS, "purpose": profile.VERIFY_PHONE, "phone": mask(phone)},
    )
    db.commit()
    return RedirectResponse("/account/phone/verify", status_code=303)


@signed_in(_verify_page)
def verify_phone(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    if request.method == "POST" and (refused := throttled(request, Limit.VERIFICATION, db=db)):
        return refused
    phone = profile.pending_phone(db, active.user)
    if phone is None:
        return RedirectResponse("/account", status_code=303)
    if request.method != "POST":
        db.commit()
        return _verify_page(request, db, active)
    try:
        profile.confirm_phone(context(request), db, active.user, phone, form.get("code", ""))
    except profile.PhoneNeeded as exc:
        return _account_page(request, db, active, error=str(exc), section="phone", status_code=400)
    except (profile.WrongCode, profile.PhoneUnavailable) as exc:
        wrong = isinstance(exc, profile.WrongCode)
        audit(
            request,
            db,
            Event.PHONE_VERIFIED,
            outcome="failure",
            user_id=active.user.id,
            detail={"phone": mask(phone), "reason": "wrong_code" if wrong else "held_by_another_account"},
        )
        db.commit()
        if wrong:
            return _verify_page(request, db, active, error=WRONG_CODE, status_code=400)
        return _account_page(request, db, active, error=PHONE_UNAVAILABLE, section="phone", status_code=400)
    audit(request, db, Event.PHONE_VERIFIED, outcome="success", user_id=active.user.id, detail={"phone": mask(phone)})
    db.commit()
    return done("phone")


@signed_in(_verify_page)
def resend_phone_code(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    if refused := throttled(request, Limit.VERIFICATION, db=db):
        return refused
    phone = profile.pending_phone(db, active.user)
    if phone is None:
        return RedirectResponse("/account", status_code=303)
    try:
        profile.send_phone_code(context(request), db, active.user, phone)
    except otp.ResendTooSoon as exc:
        db.rollback()
        return _verify_page(request, db, active, error=_wait_message(exc.wait), wait=exc.wait, status_code=429)
    except sms_budget.SmsRefused as exc:
        db.rollback()
        return _verify_page(request, db, active, error=str(exc), wait=exc.retry_after, status_code=429)
    audit(
        request,
        db,
        Event.CODE_SENT,
        outcome="success",
        user_id=active.user.id,
        detail={"channel": Channel.SMS, "purpose": profile.VERIFY_PHONE, "phone": mask(phone)},
    )
    db.commit()
    return _verify_page(request, db, active, notice="We sent you a new code.")


@signed_in(_account_page)
def remove_phone(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    try:
        phone = profile.remove_phone(context(request), db, active.user)
    except profile.ProfileError as exc:
        return _account_page(request, db, active, error=str(exc), section="phone_remove", status_code=400)
    audit(request, db, Event.PHONE_REMOVED, outcome="success", user_id=active.user.id, detail={"phone": mask(phone)})
    db.commit()
    return done("phone_removed")


@signed_in(_account_page)
def end_one_session(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    """End one of the person's sessions; ending this one signs this browser out."""
    session_id = request.path_params["session_id"]
    if not profile.end_one(db, active.user, session_id):
        return error_page(request, NO_SUCH_SESSION, status_code=404)
    current = session_id == active.session.id
    audit(
        request,
        db,
        Event.SESSION_ENDED,
        outcome="success",
        user_id=active.user.id,
        detail={"session_id": session_id, "current": current},
    )
    db.commit()
    if not current:
        return done("session")
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(request, response)
    return response


@signed_in(_account_page)
def end_other_sessions(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    """Sign out everywhere else; a phone number nobody vouched for since it was added goes too."""
    ended = profile.end_others(context(request), db, active.user, active.session.id)
    for session_id in ended.sessions:
        audit(
            request,
            db,
            Event.SESSION_ENDED,
            outcome="success",
            user_id=active.user.id,
            detail={"session_id": session_id, "current": False},
        )
    if ended.phone_removed is not None:
        audit(
            request,
            db,
            Event.PHONE_REMOVED,
            outcome="success",
            user_id=active.user.id,
            detail={"phone": mask(ended.phone_removed), "reason": "added_since_confirmation"},
        )
    db.commit()
    return done("others" if ended.phone_removed is None else "others_phone")


@signed_in(_account_page)
def change_password(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    """The service checks the current password, applies the policy and ends the other sessions.

    Each try spends one of the address's sign-in budget: a stolen session must not make the server
    hash guesses of the current password without end (the lockout stops them only per account)."""
    ctx = context(request)
    if refused := throttled(request, Limit.SIGN_IN, db=db):
        return refused
    if form.get("password", "") != form.get("password_confirm", ""):
        return _account_page(request, db, active, error=PASSWORDS_DIFFER, section="password", status_code=400)
    try:
        change_password_service(
            db,
            ctx.settings,
            ctx.secret_key,
            active.user,
            form.get("current_password", ""),
            form.get("password", ""),
            active.session.id,
            ip=request_address(request),
            user_agent=request.headers.get("user-agent"),
        )
    except NotReauthenticated as exc:
        db.commit()
        return _account_page(request, db, active, error=str(exc), section="password", status_code=400)
    except PasswordRejected as exc:
        db.rollback()
        return _account_page(request, db, active, error=str(exc), section="password", status_code=400)
    db.commit()
    return done("password")


def _password_set_page(
    request: Request,
    db: Session,
    active: ActiveSession,
    *,
    error: str | None = None,
    notice: str | None = None,
    wait: int | None = None,
    status_code: int = 200,
) -> Response:
    if active.user.password_hash is not None:
        return RedirectResponse("/account", status_code=303)
    context = {"email": active.user.email, "error": error, "notice": notice, "wait": wait}
    return render(request, "account_password_set.html", context, status_code=status_code)


@signed_in(_account_page)
def send_password_code(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    """Email the code that a first password needs; from ``/account``, and again from its form."""
    if refused := throttled(request, Limit.VERIFICATION, db=db):
        return refused
    try:
        email = first_password.send_code(context(request), db, active.user)
    except first_password.FirstPasswordError as exc:
        return _account_page(request, db, active, error=str(exc), section="password", status_code=400)
    except otp.ResendTooSoon as exc:
        db.rollback()
        message = f"Too many codes were sent to your email address. You can ask for a new one in {exc.wait} seconds."
        return _password_set_page(request, db, active, error=message, wait=exc.wait, status_code=429)
    audit(
        request,
        db,
        Event.CODE_SENT,
        outcome="success",
        user_id=active.user.id,
        detail={"channel": Channel.EMAIL, "purpose": first_password.PURPOSE},
    )
    db.commit()
    return _password_set_page(request, db, active, notice=f"We sent a code to {email}.")


@signed_in(_password_set_page)
def set_password(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    """The code and the new password; a password the policy refuses leaves the code usable."""
    if request.method == "POST" and (refused := throttled(request, Limit.VERIFICATION, db=db)):
        return refused
    if not first_password.code_pending(db, active.user):
        return RedirectResponse("/account", status_code=303)
    if request.method != "POST":
        db.commit()
        return _password_set_page(request, db, active)
    if form.get("password", "") != form.get("password_confirm", ""):
        return _password_set_page(request, db, active, error=PASSWORDS_DIFFER, status_code=400)
    ctx = context(request)
    try:
        ended = first_password.set_first_password(
            ctx, db, active.user, form.get("code", ""), form.get("password", ""), active.session.id
        )
    except first_password.WrongCode:
        audit(
            request, db, Event.PASSWORD_SET, outcome="failure", user_id=active.user.id, detail={"reason": "wrong_code"}
        )
        db.commit()
        return _password_set_page(request, db, active, error=WRONG_CODE, status_code=400)
    except (first_password.FirstPasswordError, PasswordRejected) as exc:
        db.rollback()
        return _password_set_page(request, db, active, error=str(exc), status_code=400)
    audit(request, db, Event.PASSWORD_SET, outcome="success", user_id=active.user.id, detail={"sessions_ended": ended})
    db.commit()
    return done("password_set")
