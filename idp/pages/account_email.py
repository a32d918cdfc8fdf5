"""Changing the email address from ``/account/email``, and the link sent to the new address.

The form takes ``email`` and, when the account has a password, ``current_password``. Asking
answers the same whether or not another account has the address; the address changes only when
the link is followed, in any browser, signed in or not.

Opening the link changes nothing: mail scanners fetch the links of the mail they read. Its page
has a button that posts ``token`` back with the page's ``csrf_token``, and that POST changes the
address.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ..accounts import email_change
from ..accounts.reauthentication import NotReauthenticated, RecentSignIn, reauthenticate
from ..audit import Event, mask
from ..security.rate_limits import Limit
from ..sso import ActiveSession
from ..web.rendering import error_page, render
from ..web.request import audit, context
from ..web.throttling import throttled
from .account import EXPIRED_FORM, done, signed_in
from .forms import form_page

LINK_INVALID = (
    "This link to change your email address is not valid: it was already used, it expired, or it is "
    "incomplete. Sign in and ask for a new one."
)
TAKEN = "This email address now belongs to another account, so yours did not change."


def _email_page(
    request: Request,
    db: Session,
    active: ActiveSession,
    *,
    error: str | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    context = {
        "user": active.user,
        "pending_email": email_change.pending_email(db, active.user),
        "error": error,
        "values": values or {},
    }
    return render(request, "account_email.html", context, status_code=status_code)


def _requested(request: Request, db: Session, active: ActiveSession, outcome: str, **detail: object) -> None:
    audit(request, db, email_change.REQUEST_EVENT, outcome=outcome, user_id=active.user.id, detail=detail)


@signed_in(_email_page)
def change_email(request: Request, db: Session, active: ActiveSession, form: dict[str, str]) -> Response:
    """The form, and asking for the link; a taken address gets the same answer as a free one."""
    if request.method != "POST":
        db.commit()
        return _email_page(request, db, active)
    if refused := throttled(request, Limit.VERIFICATION, db=db):
        return refused
    ctx = context(request)
    values = {"email": form.get("email", "")}
    try:
        email = email_change.parse(active.user, form.get("email", ""))
        reauthenticate(
            db,
            ctx.settings,
            ctx.secret_key,
            active.user,
            form.get("current_password", ""),
            recent_sign_in=RecentSignIn.WITHOUT_PASSWORD,
            auth_time=active.session.auth_time,
        )
    except NotReauthenticated as exc:
        _requested(request, db, active, "failure", reason=exc.reason)
        db.commit()
        return _email_page(request, db, active, error=str(exc), values=values, status_code=400)
    except email_change.EmailChangeError as exc:
        return _email_page(request, db, active, error=str(exc), values=values, status_code=400)
    try:
        requested = email_change.request_change(ctx, db, active.user, email)
    except email_change.TooManyRequests as exc:
        _requested(request, db, active, "failure", recipient=mask(email), reason="rate_limited")
        db.commit()
        message = (
            f"You asked for several links to this address in a short time. You can ask again in {exc.wait} seconds."
        )
        return _email_page(request, db, active, error=message, values=values, status_code=429)
    if requested.taken:
        _requested(
            request, db, active, "failure", address=requested.address, recipient=mask(email), reason="address_taken"
        )
    else:
        _requested(request, db, active, "success", address=requested.address, recipient=mask(email))
    db.commit()
    return done("email")


def _confirm_page(request: Request, db: Session, token: str | None, *, error: str | None = None) -> Response:
    """The page of a live link, with the button that confirms it; the error page of any other."""
    link = email_change.find_link(db, token)
    if link is None:
        return error_page(request, LINK_INVALID)
    context = {"token": token, "email": link.email, "error": error}
    return render(request, "account_email_confirm.html", context, status_code=400 if error else 200)


@form_page
def confirm_email(request: Request, form: dict[str, str]) -> Response:
    """The link sent to the new address: it works in any browser, signed in or not. Opening it only
    shows the button; the POST with the page's CSRF token changes the address."""
    ctx = context(request)
    with ctx.db() as db:
        if request.method != "POST":
            return _confirm_page(request, db, request.query_params.get("token"))
        token = form.get("token")
        if not context(request).csrf.valid(request, form.get("csrf_token")):
            return _confirm_page(request, db, token, error=EXPIRED_FORM)
        try:
            changed = email_change.confirm(ctx, db, token)
        except email_change.LinkInvalid:
            db.rollback()
            audit(request, db, Event.EMAIL_CHANGED, outcome="failure", detail={"reason": "invalid_link"})
            db.commit()
            return error_page(request, LINK_INVALID)
        except email_change.AddressTaken as exc:
            audit(
                request,
                db,
                Event.EMAIL_CHANGED,
                outcome="failure",
                user_id=exc.user_id,
                detail={"reason": "address_taken"},
            )
            db.commit()
            return error_page(request, TAKEN, status_code=409)
        new_email = changed.user.email
        assert new_email is not None
        detail = {"from": mask(changed.old_email) if changed.old_email else None, "to": mask(new_email)}
        audit(request, db, Event.EMAIL_CHANGED, outcome="success", user_id=changed.user.id, detail=detail)
        db.commit()
    return render(request, "account_email_changed.html", {"email": new_email})
