"""Changing the email address from ``/account/email``, and the link sent to the new address.

The form takes ``email`` and, when the account has a password, ``current_password``. Asking
answers the same whether or not another account has the address; the address changes only when
the link is followed, in any browser, signed in or not.

Opening the link changes nothing: mail scanners fetch the links of the mail they read. Its page
has a button that posts ``token`` back with the page's ``csrf_token``, and that POST changes the
address.
"""

from __future__ import annotations

from starlette.responses import Response

from ..accounts import commands, email_change
from ..accounts.errors import Code
from ..security.rate_limits import Limit
from ..web.locale import language
from ..web.messages import message
from ..web.pipeline import Needs
from ..web.rendering import message_page, render
from .signed_in import Form, Person, done, signed_in
from .surface import ERROR_PAGE, Shown, Visit, Visitor, visit


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


def _confirm_page(call: Visitor, shown: Shown) -> Response:
    """The page of a live link, with the button that confirms it; the error page of any other."""
    token = call.values.get("token") if call.unsafe else call.request.query_params.get("token")
    link = email_change.find_link(call.db, token)
    if link is None:
        return message_page(call.request, message(email_change.LinkInvalid(), language(call.request)))
    context = {"token": token, "email": link.email, "error": shown.error}
    return render(call.request, "account_email_confirm.html", context, status_code=shown.status_code)


LINK = Visit(_confirm_page, elsewhere={Code.INVALID_LINK: ERROR_PAGE, Code.EMAIL_TAKEN: ERROR_PAGE})


@visit(LINK)
def confirm_email(call: Visitor) -> Response:
    """The link sent to the new address: it works in any browser, signed in or not. Opening it only
    shows the button; the POST with the page's CSRF token changes the address."""
    if not call.unsafe:
        return _confirm_page(call, Shown())
    changed = email_change.confirm(call.ctx, call.db, call.values.get("token"))
    return render(call.request, "account_email_changed.html", {"email": changed.user.email})
