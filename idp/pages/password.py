"""Password reset: asking for a link (``email``), then choosing a new password with it
(``password``, ``password_confirm``).

The link's token reaches the page in the query string and goes back only as a hidden field of a
POST to a token-free URL; no link on the page carries it, and ``Referrer-Policy: no-referrer``
keeps the URL itself from leaking to other sites.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import audit as audit_log
from ..accounts import recovery
from ..accounts.password_policy import PasswordRejected
from ..accounts.users import UserError
from ..audit import Event
from ..security.rate_limits import Limit
from ..web.messages import message
from ..web.rendering import error_page, render
from ..web.request import audit, context, transaction
from ..web.throttling import throttled
from .forms import form_page

EXPIRED_FORM = "This form has expired. Please try again."
NOT_AN_EMAIL = "That is not an email address."
BAD_LINK = (
    "This link to reset your password is not valid: it was already used, it expired, or it is incomplete. "
    "Ask for a new one."
)
MISMATCH = "The two passwords are not the same."


@form_page
def forgot_password(request: Request, form: dict[str, str]) -> Response:
    """Known, unknown, disabled or over the limit: the same page, after the same kind of work."""
    ctx = context(request)
    page = {"email": form.get("email", "")}
    if request.method != "POST":
        return render(request, "password_forgot.html", page)
    if not context(request).csrf.valid(request, form.get("csrf_token")):
        return render(request, "password_forgot.html", {**page, "error": EXPIRED_FORM}, status_code=400)
    if refused := throttled(request, Limit.RESET):
        return refused
    with transaction(request) as db:
        try:
            asked = recovery.request_reset(db, ctx.settings, ctx.secret_key, form.get("email", ""))
        except UserError:
            return render(request, "password_forgot.html", {**page, "error": NOT_AN_EMAIL}, status_code=400)
        sent = asked.result is recovery.Requested.SENT
        detail: dict[str, object] = {"recipient": audit_log.mask(asked.email)}
        if not sent:
            detail["reason"] = asked.result.value
        audit(
            request,
            db,
            Event.PASSWORD_RESET_REQUESTED,
            outcome="success" if sent else "failure",
            user_id=asked.user_id,
            detail=detail,
        )
        db.commit()
    return render(request, "password_forgot_sent.html", {"minutes": recovery.LINK_LIFETIME // 60})


@form_page
def reset_password(request: Request, form: dict[str, str]) -> Response:
    """Each new password tried spends one of the address's sign-in budget, as a password change
    does: a refused one costs argon2 checks against the history and leaves the link usable."""
    ctx = context(request)
    token = form.get("token", "") if request.method == "POST" else request.query_params.get("token", "")
    page = {"token": token, "min_length": ctx.settings.password_min_length}
    with transaction(request) as db:
        if recovery.find_reset_link(db, token) is None:
            return error_page(request, BAD_LINK)
        if request.method != "POST":
            return render(request, "password_reset.html", page)
        if not context(request).csrf.valid(request, form.get("csrf_token")):
            return render(request, "password_reset.html", {**page, "error": EXPIRED_FORM}, status_code=400)
        if refused := throttled(request, Limit.SIGN_IN, db=db):
            return refused
        password = form.get("password", "")
        if password != form.get("password_confirm", ""):
            return render(request, "password_reset.html", {**page, "error": MISMATCH}, status_code=400)
        try:
            reset = recovery.reset_password(db, ctx.settings, ctx.secret_key, token, password)
        except recovery.ResetLinkInvalid:
            db.rollback()
            return error_page(request, BAD_LINK)
        except PasswordRejected as exc:
            db.rollback()
            return render(request, "password_reset.html", {**page, "error": message(exc)}, status_code=400)
        audit(
            request,
            db,
            Event.PASSWORD_RESET,
            outcome="success",
            user_id=reset.user.id,
            detail={"sessions_ended": reset.sessions_ended},
        )
        if reset.phone_removed is not None:
            audit(
                request,
                db,
                Event.PHONE_REMOVED,
                outcome="success",
                user_id=reset.user.id,
                detail={"phone": audit_log.mask(reset.phone_removed), "reason": "added_since_confirmation"},
            )
        db.commit()
    phone_removed = audit_log.mask(reset.phone_removed) if reset.phone_removed else None
    return render(request, "password_reset_done.html", {"phone_removed": phone_removed})
