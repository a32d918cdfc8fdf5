"""Password reset: asking for a link (``email``), then choosing a new password with it
(``password``, ``password_confirm``).

The link's token reaches the page in the query string and goes back only as a hidden field of a
POST to a token-free URL; no link on the page carries it, and ``Referrer-Policy: no-referrer``
keeps the URL itself from leaking to other sites.
"""

from __future__ import annotations

from starlette.responses import Response

from .. import audit
from ..accounts import recovery
from ..accounts.errors import Code, PasswordsDiffer
from ..security.rate_limits import Limit
from ..web.locale import language
from ..web.messages import message
from ..web.pipeline import Needs
from ..web.rendering import message_page, render
from .surface import ERROR_PAGE, Shown, Visit, Visitor, visit


def _forgot_page(call: Visitor, shown: Shown) -> Response:
    page = {"email": call.values.get("email", ""), "error": shown.error}
    return render(call.request, "password_forgot.html", page, status_code=shown.status_code)


@visit(Visit(_forgot_page), Needs(limits=(Limit.RESET,), lock=False))
def forgot_password(call: Visitor) -> Response:
    """Known, unknown, disabled or over the limit: the same page, after the same kind of work."""
    if not call.unsafe:
        return _forgot_page(call, Shown())
    recovery.request_reset(call.db, call.ctx.settings, call.ctx.secret_key, call.values.get("email", ""))
    return render(call.request, "password_forgot_sent.html", {"minutes": recovery.LINK_LIFETIME // 60})


def _token(call: Visitor) -> str:
    return call.values.get("token", "") if call.unsafe else call.request.query_params.get("token", "")


def _reset_page(call: Visitor, shown: Shown) -> Response:
    if recovery.find_reset_link(call.db, _token(call)) is None:
        return message_page(call.request, message(recovery.ResetLinkInvalid(), language(call.request)))
    page = {"token": _token(call), "min_length": call.ctx.settings.password_min_length, "error": shown.error}
    return render(call.request, "password_reset.html", page, status_code=shown.status_code)


@visit(Visit(_reset_page, elsewhere={Code.INVALID_LINK: ERROR_PAGE}), Needs(limits=(Limit.SIGN_IN,), lock=False))
def reset_password(call: Visitor) -> Response:
    """Each new password tried spends one of the address's sign-in budget, as a password change
    does: a refused one costs argon2 checks against the history and leaves the link usable."""
    password = call.values.get("password", "")
    if not call.unsafe:
        return _reset_page(call, Shown())
    if password != call.values.get("password_confirm", ""):
        raise PasswordsDiffer("not_the_same")
    ctx = call.ctx
    reset = recovery.reset_password(call.db, ctx.settings, ctx.secret_key, _token(call), password)
    phone_removed = audit.mask(reset.phone_removed) if reset.phone_removed else None
    return render(call.request, "password_reset_done.html", {"phone_removed": phone_removed})
