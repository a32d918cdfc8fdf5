"""Signing in with a one-time code: asking for one (``identifier``), and entering it (``code``).

The code page also serves the second factor after a password. A wrong code shows an alert; the
third wrong try spends the code, and asking for a new one shows how long to wait.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts import challenges, otp
from ..metrics import SIGN_INS
from ..oauth.authorization import load_pending
from ..oauth.errors import BadAuthorizationTarget
from ..security.rate_limits import Limit
from ..storage import PendingSignIn, User
from .browser import audit
from .forms import form_page
from .rendering import error_page, render
from .signin import complete_sign_in, pending_sign_in, set_pending_cookie, start_second_factor
from .throttling import throttled

EXPIRED_FORM = "This form has expired. Please try again."
WRONG_CODE = "That code is not right, or it has expired. Check it, or ask for a new one."
GONE = "This sign-in has expired. Please start again."
TOO_MANY = "That was the third wrong code, so this sign-in has ended. Please start again."


def _wait_message(wait: int) -> str:
    return f"Too many codes were sent. You can ask for a new one in {wait} seconds."


@form_page
def request_code(request: Request, form: dict[str, str]) -> Response:
    ctx = request.app.state.ctx
    request_id = form.get("request") if request.method == "POST" else request.query_params.get("request")
    page = {"request_id": request_id, "identifier": form.get("identifier", "")}
    if request.method != "POST":
        return render(request, "code_request.html", page)
    if not request.app.state.csrf.valid(request, form.get("csrf_token")):
        return render(request, "code_request.html", {**page, "error": EXPIRED_FORM}, status_code=400)
    if refused := throttled(request, Limit.SIGN_IN, Limit.VERIFICATION):
        return refused
    try:
        identifier = challenges.parse_identifier(form.get("identifier", ""), ctx.settings.phone_default_region)
    except challenges.IdentifierError as exc:
        return render(request, "code_request.html", {**page, "error": str(exc)}, status_code=400)
    with ctx.sessions() as db:
        if request_id:
            try:
                load_pending(db, request_id)
            except BadAuthorizationTarget as exc:
                return error_page(request, str(exc))
        try:
            pending, cookie = challenges.start_passwordless(ctx, db, identifier, request_id)
        except otp.ResendTooSoon as exc:
            db.rollback()
            return render(request, "code_request.html", {**page, "error": _wait_message(exc.wait)}, status_code=429)
        audit(
            request,
            db,
            "code_sent",
            outcome="success",
            user_id=pending.user_id,
            detail={"channel": identifier.channel, "purpose": "sign_in"},
        )
        db.commit()
    response = RedirectResponse("/login/verify", status_code=303)
    set_pending_cookie(request, response, cookie)
    return response


@form_page
def enter_code(request: Request, form: dict[str, str]) -> Response:
    ctx = request.app.state.ctx
    with ctx.sessions() as db:
        pending = challenges.find(db, pending_sign_in(request))
        if pending is None:
            return error_page(request, GONE)
        page = {
            "second_factor": challenges.is_second_factor(pending),
            "channel": pending.channel,
        }
        if request.method != "POST":
            return render(request, "code_enter.html", page)
        if not request.app.state.csrf.valid(request, form.get("csrf_token")):
            return render(request, "code_enter.html", {**page, "error": EXPIRED_FORM}, status_code=400)
        if refused := throttled(request, Limit.SIGN_IN, db=db):
            return refused
        try:
            result = challenges.verify(ctx, db, pending, form.get("code", ""))
        except challenges.TooManyWrongCodes:
            audit(
                request,
                db,
                "code_verified",
                outcome="failure",
                user_id=pending.user_id,
                detail={"channel": pending.channel, "reason": "too_many_wrong_codes"},
            )
            db.commit()
            return error_page(request, TOO_MANY)
        purpose = "second_factor" if challenges.is_second_factor(pending) else "sign_in"
        if result is None:
            audit(
                request,
                db,
                "code_verified",
                outcome="failure",
                user_id=pending.user_id,
                detail={"channel": pending.channel, "purpose": purpose},
            )
            db.commit()
            SIGN_INS.labels(method="second_factor" if page["second_factor"] else "code", outcome="failure").inc()
            return render(request, "code_enter.html", {**page, "error": WRONG_CODE}, status_code=400)
        user, amr = result
        audit(
            request,
            db,
            "code_verified",
            outcome="success",
            user_id=user.id,
            detail={"channel": pending.channel, "purpose": purpose},
        )
        challenges.finish(db, pending)
        request_id = pending.authorization_request_id
        if _second_factor_due(user, pending):
            return start_second_factor(request, db, user, authorization_request_id=request_id, first_factor=tuple(amr))
        return complete_sign_in(request, db, user, amr=amr, authorization_request_id=request_id)


def _second_factor_due(user: User, pending: PendingSignIn) -> bool:
    """A one-time code by email or SMS proves that one channel: an account with two-step
    verification still owes its second factor, unless that factor is the very channel the code
    just proved (a second code to the same mailbox would prove nothing more)."""
    if challenges.is_second_factor(pending):
        return False
    return user.mfa_method is not None and user.mfa_method != pending.channel


@form_page
def resend_code(request: Request, form: dict[str, str]) -> Response:
    ctx = request.app.state.ctx
    with ctx.sessions() as db:
        pending = challenges.find(db, pending_sign_in(request))
        if pending is None:
            return error_page(request, GONE)
        page = {"second_factor": challenges.is_second_factor(pending), "channel": pending.channel}
        if not request.app.state.csrf.valid(request, form.get("csrf_token")):
            return render(request, "code_enter.html", {**page, "error": EXPIRED_FORM}, status_code=400)
        if refused := throttled(request, Limit.VERIFICATION, db=db):
            return refused
        try:
            challenges.send_code(ctx, db, pending)
        except otp.ResendTooSoon as exc:
            db.rollback()
            return render(
                request,
                "code_enter.html",
                {**page, "error": _wait_message(exc.wait), "wait": exc.wait},
                status_code=429,
            )
        purpose = "second_factor" if challenges.is_second_factor(pending) else "sign_in"
        detail = {"channel": pending.channel, "purpose": purpose}
        audit(request, db, "code_sent", outcome="success", user_id=pending.user_id, detail=detail)
        db.commit()
        return render(request, "code_enter.html", {**page, "notice": "We sent you a new code."})
