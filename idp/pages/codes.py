"""Signing in with a one-time code: asking for one (``identifier``), and entering it (``code``).

The code page also serves the second factor after a password. A wrong code shows an alert; the
third wrong try spends the code, and asking for a new one shows how long to wait.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts import challenges, otp, sms_budget
from ..accounts.codes_vocabulary import Purpose
from ..accounts.errors import AccountError
from ..audit import Event
from ..metrics import SIGN_INS
from ..oauth.authorization import load_pending
from ..oauth.errors import BadAuthorizationTarget
from ..security.rate_limits import Limit
from ..web.messages import message
from ..web.rendering import error_page, render
from ..web.request import audit, context, transaction
from ..web.throttling import throttled
from .forms import form_page
from .signin import complete_sign_in, pending_sign_in, set_pending_cookie, start_second_factor

EXPIRED_FORM = "This form has expired. Please try again."
WRONG_CODE = "That code is not right, or it has expired. Check it, or ask for a new one."
GONE = "This sign-in has expired. Please start again."
TOO_MANY = "That was the third wrong code, so this sign-in has ended. Please start again."


def _wait_message(wait: int) -> str:
    return f"Too many codes were sent. You can ask for a new one in {wait} seconds."


def _sms_refused(request: Request, template: str, page: dict[str, Any], refused: sms_budget.SmsRefused) -> Response:
    """429 with ``Retry-After`` while a budget is spent; 400 for a number no message may go to."""
    if refused.wait is None:
        return render(request, template, {**page, "error": message(refused)}, status_code=400)
    response = render(request, template, {**page, "error": message(refused), "wait": refused.wait}, status_code=429)
    response.headers["Retry-After"] = str(refused.wait)
    return response


@form_page
def request_code(request: Request, form: dict[str, str]) -> Response:
    ctx = context(request)
    request_id = form.get("request") if request.method == "POST" else request.query_params.get("request")
    page = {"request_id": request_id, "identifier": form.get("identifier", "")}
    if request.method != "POST":
        return render(request, "code_request.html", page)
    if not context(request).csrf.valid(request, form.get("csrf_token")):
        return render(request, "code_request.html", {**page, "error": EXPIRED_FORM}, status_code=400)
    if refused := throttled(request, Limit.SIGN_IN, Limit.VERIFICATION):
        return refused
    try:
        identifier = challenges.parse_identifier(form.get("identifier", ""), ctx.settings.phone_default_region)
    except AccountError as exc:
        return render(request, "code_request.html", {**page, "error": message(exc)}, status_code=400)
    with transaction(request) as db:
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
        except sms_budget.SmsRefused as exc:
            db.rollback()
            return _sms_refused(request, "code_request.html", page, exc)
        db.commit()
    response = RedirectResponse("/login/verify", status_code=303)
    set_pending_cookie(request, response, cookie)
    return response


@form_page
def enter_code(request: Request, form: dict[str, str]) -> Response:
    ctx = context(request)
    with transaction(request) as db:
        pending = challenges.find(db, pending_sign_in(request))
        if pending is None:
            return error_page(request, GONE)
        page = {
            "second_factor": challenges.is_second_factor(pending),
            "channel": pending.channel,
        }
        if request.method != "POST":
            return render(request, "code_enter.html", page)
        if not context(request).csrf.valid(request, form.get("csrf_token")):
            return render(request, "code_enter.html", {**page, "error": EXPIRED_FORM}, status_code=400)
        if refused := throttled(request, Limit.SIGN_IN, db=db):
            return refused
        try:
            result = challenges.verify(ctx, db, pending, form.get("code", ""))
        except challenges.SignInEnded as exc:
            audit(
                request,
                db,
                Event.CODE_VERIFIED,
                outcome="failure",
                user_id=pending.user_id,
                detail={"channel": pending.channel, "reason": exc.reason},
            )
            db.commit()
            return error_page(request, TOO_MANY if isinstance(exc, challenges.TooManyWrongCodes) else str(exc))
        purpose = Purpose.SECOND_FACTOR if challenges.is_second_factor(pending) else Purpose.SIGN_IN
        if result is None:
            audit(
                request,
                db,
                Event.CODE_VERIFIED,
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
            Event.CODE_VERIFIED,
            outcome="success",
            user_id=user.id,
            detail={"channel": pending.channel, "purpose": purpose},
        )
        challenges.finish(db, pending)
        request_id = pending.authorization_request_id
        if challenges.second_factor_due(user, pending):
            return start_second_factor(request, db, user, authorization_request_id=request_id, first_factor=tuple(amr))
        return complete_sign_in(request, db, user, amr=amr, authorization_request_id=request_id)


@form_page
def resend_code(request: Request, form: dict[str, str]) -> Response:
    ctx = context(request)
    with transaction(request) as db:
        pending = challenges.find(db, pending_sign_in(request))
        if pending is None:
            return error_page(request, GONE)
        page = {"second_factor": challenges.is_second_factor(pending), "channel": pending.channel}
        if not context(request).csrf.valid(request, form.get("csrf_token")):
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
        except sms_budget.SmsRefused as exc:
            db.rollback()
            return _sms_refused(request, "code_enter.html", page, exc)
        db.commit()
        return render(request, "code_enter.html", {**page, "notice": "We sent you a new code."})
