"""Signing in with a one-time code: asking for one (``identifier``), and entering it (``code``).

The code page also serves the second factor after a password. A wrong code shows an alert; the
third wrong try spends the code, and asking for a new one shows how long to wait. The forms are
served by the request pipeline (:mod:`idp.pages.surface`): a handler here calls the sign-in
challenge service, which records what happened, and says where to go.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from ..accounts import challenges
from ..accounts.errors import AccountError, Code
from ..accounts.sign_in_methods import leads_with_code
from ..catalogs import N_
from ..oauth.authorization import try_hint_code_once
from ..oauth.errors import BadAuthorizationTarget
from ..security.rate_limits import Limit
from ..storage import PendingSignIn
from ..web.branding import ClientBrand
from ..web.locale import language, translate
from ..web.messages import message
from ..web.pipeline import Needs, Throttled
from ..web.rendering import error_page, render
from ..web.throttling import refusal_notice
from .signin import (
    complete_sign_in,
    pending_sign_in,
    request_id,
    set_pending_cookie,
    start_second_factor,
    target,
    waiting_target,
)
from .surface import ERROR_PAGE, Shown, Visit, Visitor, visit

GONE = N_("This sign-in has expired. Please start again.")
RESENT = N_("We sent you a new code.")


def code_request_page(call: Visitor, shown: Shown, typed: str | None = None) -> Response:
    """The page asking for a code; its field holds what was ``typed``, else the request's
    ``login_hint``. With password sign-in off it is the sign-in page too (:mod:`.login`)."""
    serving = request_id(call)
    served = waiting_target(call, serving)
    hint = served.params.login_hint if served.params is not None else None
    page = {
        "request_id": serving,
        "client": ClientBrand.of(served.client),
        "identifier": typed if typed is not None else call.values.get("identifier", hint or ""),
        "password_sign_in": call.ctx.settings.password_sign_in,
        "error": shown.error,
        "wait": shown.wait,
    }
    return render(call.request, "code_request.html", page, status_code=shown.status_code)


def _enter_page(call: Visitor, shown: Shown) -> Response:
    pending = challenges.find(call.db, pending_sign_in(call.request))
    if pending is None:
        return error_page(call.request, GONE)
    client = waiting_target(call, pending.authorization_request_id).client
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
        waiting_target(call, pending.authorization_request_id)
    return pending


REQUEST = Visit(code_request_page)
ENTER = Visit(_enter_page, elsewhere={Code.SIGN_IN_ENDED: ERROR_PAGE})


CODE_LIMITS = (Limit.SIGN_IN, Limit.VERIFICATION)
"""The per-address limits a code asked for on the page spends, and so a code sent to a hint too."""


@visit(REQUEST, Needs(limits=CODE_LIMITS, lock=False))
def request_code(call: Visitor) -> Response:
    if not call.unsafe:
        return _code_to_hint(call) or code_request_page(call, Shown())
    ctx = call.ctx
    identifier = challenges.parse_identifier(call.values.get("identifier", ""), ctx.settings.phone_default_region)
    _, cookie = challenges.start_passwordless(ctx, call.db, identifier, target(call).request_id)
    response = RedirectResponse("/login/verify", status_code=303)
    set_pending_cookie(call.request, response, cookie)
    return response


def _code_to_hint(call: Visitor) -> Response | None:
    """The sign-in of a code-first client (or of any, with password sign-in off) sends the code to
    the request's ``login_hint`` as its page opens, as if the person had asked for it there: once
    per authorization request (a reload or the back button sends nothing more), through the same
    service and under the same limits as the form, and so the same for an identifier with an
    account and one without. Anyone can link here, so nothing else is granted: a hint that is no
    address or number is ignored, and a refusal (a limit, a country not served) is told on the
    page rather than ending the sign-in. A HEAD (a link checker's) sends nothing. ``None``: nothing
    to send, show the page."""
    if call.request.method == "HEAD":
        return None
    try:
        serving = target(call)
    except BadAuthorizationTarget:
        return None
    ctx = call.ctx
    if serving.request_id is None or serving.client is None or serving.params is None:
        return None
    if not serving.params.login_hint or not leads_with_code(ctx.settings, serving.client.sign_in):
        return None
    try:
        identifier = challenges.parse_identifier(serving.params.login_hint, ctx.settings.phone_default_region)
    except AccountError:
        return None
    if not try_hint_code_once(call.db, serving.request_id):
        return None
    try:
        with call.db.begin_nested():
            for limit in CODE_LIMITS:
                call.spend(limit)
            _, cookie = challenges.start_passwordless(ctx, call.db, identifier, serving.request_id)
    except Throttled as throttled:
        return code_request_page(call, Shown(error=refusal_notice(call.request, throttled.refusal, call.db)))
    except AccountError as error:
        return code_request_page(call, Shown(error=message(error, language(call.request)), wait=error.wait))
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
