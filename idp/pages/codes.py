"""Signing in with a one-time code: asking for one (``identifier``), and entering it (``code``).

The code page also serves the second factor after a password. A wrong code shows an alert; the
third wrong try spends the code, and asking for a new one shows how long to wait. The forms are
served by the request pipeline (:mod:`idp.pages.surface`): a handler here calls the sign-in
challenge service, which records what happened, and says where to go.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from ..accounts import challenges
from ..accounts.errors import Code
from ..catalogs import N_
from ..security.rate_limits import Limit
from ..storage import PendingSignIn
from ..web.branding import ClientBrand
from ..web.locale import translate
from ..web.pipeline import Needs
from ..web.rendering import error_page, render
from .signin import (
    complete_sign_in,
    pending_sign_in,
    request_id,
    requesting_client,
    set_pending_cookie,
    start_second_factor,
    target,
)
from .surface import ERROR_PAGE, Shown, Visit, Visitor, visit

GONE = N_("This sign-in has expired. Please start again.")
RESENT = N_("We sent you a new code.")


def _request_page(call: Visitor, shown: Shown) -> Response:
    serving = request_id(call)
    page = {
        "request_id": serving,
        "client": ClientBrand.of(requesting_client(call, serving)),
        "identifier": call.values.get("identifier", ""),
        "error": shown.error,
        "wait": shown.wait,
    }
    return render(call.request, "code_request.html", page, status_code=shown.status_code)


def _enter_page(call: Visitor, shown: Shown) -> Response:
    pending = challenges.find(call.db, pending_sign_in(call.request))
    if pending is None:
        return error_page(call.request, GONE)
    client = requesting_client(call, pending.authorization_request_id)
    progress = challenges.progress(call.ctx, call.db, pending)
    page = {
        "client": ClientBrand.of(client),
        "second_factor": challenges.is_second_factor(pending),
        "channel": pending.channel,
        "error": shown.error,
        "notice": shown.notice,
        "wait": shown.wait,
        "tries_left": progress.tries_left,
        "resend_in": progress.resend_in,
    }
    return render(call.request, "code_enter.html", page, status_code=shown.status_code)


def _pending(call: Visitor) -> PendingSignIn | None:
    pending = challenges.find(call.db, pending_sign_in(call.request))
    if pending is not None:
        requesting_client(call, pending.authorization_request_id)
    return pending


REQUEST = Visit(_request_page)
ENTER = Visit(_enter_page, elsewhere={Code.SIGN_IN_ENDED: ERROR_PAGE})


@visit(REQUEST, Needs(limits=(Limit.SIGN_IN, Limit.VERIFICATION), lock=False))
def request_code(call: Visitor) -> Response:
    if not call.unsafe:
        return _request_page(call, Shown())
    ctx = call.ctx
    identifier = challenges.parse_identifier(call.values.get("identifier", ""), ctx.settings.phone_default_region)
    _, cookie = challenges.start_passwordless(ctx, call.db, identifier, target(call).request_id)
    response = RedirectResponse("/login/verify", status_code=303)
    set_pending_cookie(call.request, response, cookie)
    return response


@visit(ENTER, Needs(limits=(Limit.SIGN_IN,), lock=False))
def enter_code(call: Visitor) -> Response:
    pending = _pending(call)
    if pending is None or not call.unsafe:
        return _enter_page(call, Shown())
    user, amr = challenges.verify(call.ctx, call.db, pending, call.values.get("code", ""))
    challenges.finish(call.db, pending)
    request_id = pending.authorization_request_id
    if challenges.second_factor_due(user, pending):
        return start_second_factor(
            call.request, call.db, user, authorization_request_id=request_id, first_factor=tuple(amr)
        )
    return complete_sign_in(call.request, call.db, user, amr=amr, authorization_request_id=request_id)


@visit(ENTER, Needs(limits=(Limit.VERIFICATION,), lock=False))
def resend_code(call: Visitor) -> Response:
    pending = _pending(call)
    if pending is None:
        return error_page(call.request, GONE)
    challenges.send_code(call.ctx, call.db, pending)
    return _enter_page(call, Shown(notice=translate(call.request, RESENT)))
