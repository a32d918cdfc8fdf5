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

from ..accounts import commands, email_change
from ..audit import Event, mask
from ..security.rate_limits import Limit
from ..web.pipeline import Needs
from ..web.rendering import error_page, render
from ..web.request import audit, context
from .forms import form_page
from .signed_in import EXPIRED_FORM, Form, Person, Shown, done, signed_in

LINK_INVALID = (
    "This link to change your email address is not valid: it was already used, it expired, or it is "
    "incomplete. Sign in and ask for a new one."
)
TAKEN = "This email address now belongs to another account, so yours did not change."


def _email_page(call: Person, shown: Shown) -> Response:
    context = {
        "user": call.who.user,
        "pending_email": email_change.pending_email(call.db, call.who.user),
        "error": shown.error,
        "values": shown.values,
    }
    return render(call.request, "account_email.html", context, status_code=shown.status_code)


@signed_in(Form(_email_page, refill=("email",)), Needs(limits=(Limit.VERIFICATION,), lock=False))
def change_email(call: Person) -> Response:
    """The form, and asking for the link; a taken address gets the same answer as a free one. The
    command takes the person's lock once the password is checked."""
    if not call.unsafe:
        return _email_page(call, Shown())
    values = call.values
    email, password = values.get("email", ""), values.get("current_password", "")
    commands.change_email(call.ctx, call.db, call.who, email, password, call.lock)
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
