"""Two-step sign-in on ``/account/security``: turn it on (authenticator app, email or SMS code),
turn it off, make new recovery codes.

Turning it on is two pages: ``enable`` starts an enrolment (the QR code, or a code sent) and
``confirm`` takes the ``code`` that proves it works, then shows the recovery codes once. Every
change asks for ``current_password`` unless the session signed in a few minutes ago. A form posted
locks the person's row first, as on ``/account`` (:func:`~idp.pages.account.lock_person`).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts import otp, second_factor, sms_budget, totp
from ..accounts.codes_vocabulary import Purpose, SecondFactorMethod
from ..accounts.errors import AccountError
from ..accounts.reauthentication import NotReauthenticated, RecentSignIn, reauthenticate
from ..accounts.second_factor import SecondFactorError
from ..audit import Event
from ..security.rate_limits import Limit
from ..sso import ActiveSession, note_use
from ..web.browser import current_session
from ..web.messages import message
from ..web.rendering import render
from ..web.request import audit, context
from ..web.throttling import throttled
from .forms import posted_form
from .signed_in import lock_person

EXPIRED_FORM = "This form has expired. Please try again."
WRONG_CODE = "That code is not right, or it has expired. Check it, or ask for a new one."

Handler = Callable[[Request, Session, ActiveSession, dict[str, str]], Response]


async def security(request: Request) -> Response:
    return await run_in_threadpool(_signed_in, request, _overview_page, {})


async def enable(request: Request) -> Response:
    return await _post(request, _enable)


async def confirm(request: Request) -> Response:
    return await _post(request, _confirm)


async def resend(request: Request) -> Response:
    return await _post(request, _resend)


async def disable(request: Request) -> Response:
    return await _post(request, _disable)


async def recovery_codes(request: Request) -> Response:
    return await _post(request, _recovery_codes)


async def _post(request: Request, handler: Handler) -> Response:
    form = await posted_form(request)
    if isinstance(form, Response):
        return form
    return await run_in_threadpool(_signed_in, request, handler, form)


def _signed_in(request: Request, handler: Handler, form: dict[str, str]) -> Response:
    """Run ``handler`` for the signed-in person, after the CSRF check of a POST."""
    with context(request).db() as db:
        active = current_session(request, db)
        if active is None:
            return RedirectResponse("/login", status_code=303)
        if request.method == "POST":
            if not context(request).csrf.valid(request, form.get("csrf_token")):
                return _overview(request, db, active, error=EXPIRED_FORM, status_code=400)
            if not lock_person(db, active.user.id, active.session.id):
                return RedirectResponse("/login", status_code=303)
        note_use(db, active.session)
        response = handler(request, db, active, form)
        db.commit()
        return response


def _overview_page(request: Request, db: Session, active: ActiveSession, _form: dict[str, str]) -> Response:
    return _overview(request, db, active)


def _overview(
    request: Request,
    db: Session,
    active: ActiveSession,
    *,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    page = {
        "user": active.user,
        "needs_password": second_factor.needs_password(active.session),
        "recovery_codes": totp.remaining_recovery_codes(db, active.user),
        "error": error,
        "notice": notice,
    }
    return render(request, "account_security.html", page, status_code=status_code)


def _refused(
    request: Request, db: Session, active: ActiveSession, exc: SecondFactorError | NotReauthenticated
) -> Response:
    """Nothing changed; a wrong or missing password is recorded, and its count toward the lockout
    (written by the check, before anything else) is kept."""
    if isinstance(exc, NotReauthenticated):
        audit(
            request,
            db,
            Event.REAUTHENTICATION,
            outcome="failure",
            user_id=active.user.id,
            detail={"purpose": Purpose.SECOND_FACTOR},
        )
    else:
        db.rollback()
    return _overview(
        request, db, active, error=message(exc) if isinstance(exc, AccountError) else str(exc), status_code=400
    )


def _reauthenticate(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> None:
    """A recent sign-in will do; otherwise the current password. Raises :class:`NotReauthenticated`."""
    ctx = context(request)
    reauthenticate(
        db,
        ctx.settings,
        ctx.secret_key,
        active.user,
        form.get("current_password", ""),
        recent_sign_in=RecentSignIn.ALWAYS,
        auth_time=active.session.auth_time,
    )


def _wait_message(wait: int) -> str:
    return f"Too many codes were sent. You can ask for a new one in {wait} seconds."


def _enable(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    """Email and SMS enrolments send a code, so they spend the verification budget like a resend."""
    ctx = context(request)
    if form.get("method") in (SecondFactorMethod.EMAIL, SecondFactorMethod.SMS) and (
        refused := throttled(request, Limit.VERIFICATION, db=db)
    ):
        return refused
    try:
        _reauthenticate(request, db, active, form)
        enrolment = second_factor.start(ctx, db, active.user, form.get("method", ""))
    except (NotReauthenticated, SecondFactorError) as exc:
        return _refused(request, db, active, exc)
    except otp.ResendTooSoon as exc:
        db.rollback()
        return _overview(request, db, active, error=_wait_message(exc.wait), status_code=429)
    except sms_budget.SmsRefused as exc:
        db.rollback()
        return _overview(request, db, active, error=message(exc), status_code=400 if exc.wait is None else 429)
    if enrolment.destination is not None:
        _audit_code_sent(request, db, active, enrolment)
    return render(request, "account_security_enrol.html", {"enrolment": enrolment})


def _confirm(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    ctx = context(request)
    try:
        enrolment = second_factor.open_enrolment(ctx, active.user, form.get("enrolment", ""))
    except SecondFactorError as exc:
        return _refused(request, db, active, exc)
    codes = second_factor.confirm(ctx, db, active.user, enrolment, form.get("code", ""))
    if codes is None:
        audit(
            request,
            db,
            Event.CODE_VERIFIED,
            outcome="failure",
            user_id=active.user.id,
            detail={"channel": enrolment.method, "purpose": second_factor.ENABLE_MFA},
        )
        page = {"enrolment": enrolment, "error": WRONG_CODE}
        return render(request, "account_security_enrol.html", page, status_code=400)
    audit(
        request,
        db,
        Event.SECOND_FACTOR_ENABLED,
        outcome="success",
        user_id=active.user.id,
        detail={"method": enrolment.method},
    )
    notice = "Two-step sign-in is on."
    return render(request, "account_security_recovery.html", {"codes": codes, "notice": notice})


def _resend(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    if refused := throttled(request, Limit.VERIFICATION, db=db):
        return refused
    ctx = context(request)
    try:
        enrolment = second_factor.open_enrolment(ctx, active.user, form.get("enrolment", ""))
    except SecondFactorError as exc:
        return _refused(request, db, active, exc)
    if enrolment.destination is None:
        return _overview(request, db, active, error=second_factor.EXPIRED, status_code=400)
    try:
        second_factor.send_code(ctx, db, active.user, enrolment)
    except otp.ResendTooSoon as exc:
        db.rollback()
        page = {"enrolment": enrolment, "error": _wait_message(exc.wait), "wait": exc.wait}
        return render(request, "account_security_enrol.html", page, status_code=429)
    except sms_budget.SmsRefused as exc:
        db.rollback()
        page = {"enrolment": enrolment, "error": message(exc), "wait": exc.wait}
        return render(request, "account_security_enrol.html", page, status_code=429)
    _audit_code_sent(request, db, active, enrolment)
    page = {"enrolment": enrolment, "notice": "We sent you a new code."}
    return render(request, "account_security_enrol.html", page)


def _disable(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    ctx = context(request)
    try:
        _reauthenticate(request, db, active, form)
        method = second_factor.turn_off(ctx, db, active.user)
    except (NotReauthenticated, SecondFactorError) as exc:
        return _refused(request, db, active, exc)
    audit(
        request, db, Event.SECOND_FACTOR_DISABLED, outcome="success", user_id=active.user.id, detail={"method": method}
    )
    return _overview(request, db, active, notice="Two-step sign-in is off.")


def _recovery_codes(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    ctx = context(request)
    try:
        _reauthenticate(request, db, active, form)
        codes = second_factor.new_recovery_codes(ctx, db, active.user)
    except (NotReauthenticated, SecondFactorError) as exc:
        return _refused(request, db, active, exc)
    audit(request, db, Event.RECOVERY_CODES_REGENERATED, outcome="success", user_id=active.user.id)
    notice = "Your new recovery codes are ready; the earlier ones no longer work."
    return render(request, "account_security_recovery.html", {"codes": codes, "notice": notice})


def _audit_code_sent(request: Request, db: Session, active: ActiveSession, enrolment: second_factor.Enrolment) -> None:
    """Sending the first code of an enrolment and resending it are the same event."""
    audit(
        request,
        db,
        Event.CODE_SENT,
        outcome="success",
        user_id=active.user.id,
        detail={"channel": enrolment.method, "purpose": second_factor.ENABLE_MFA},
    )
