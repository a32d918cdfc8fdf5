"""The sign-in page: ``username`` (email or phone), ``password`` and ``remember`` ("Keep me
signed in": a session of ``IDP_REMEMBER_TTL``); with ``IDP_PASSWORD_SIGN_IN``
off, the page asking for a code."""

from __future__ import annotations

from functools import partial

from starlette.responses import Response

from ..accounts.authentication import sign_in_with_password
from ..accounts.errors import Code
from ..oauth.errors import BadAuthorizationTarget
from ..security.rate_limits import Limit
from ..web.branding import ClientBrand
from ..web.pipeline import Needs
from ..web.rendering import error_page, render
from ..web.throttling import account_key
from .codes import code_request_page
from .signin import complete_sign_in, start_second_factor, target
from .surface import Shown, Visit, Visitor, visit


def _login_page(call: Visitor, shown: Shown, *, unverified: bool = False) -> Response:
    """With password sign-in off, the page asking for a code stands in for it, the refusal of a
    password posted anyway shown there."""
    if not call.ctx.settings.password_sign_in:
        return code_request_page(call, shown, typed=call.values.get("username"))
    try:
        serving = target(call)
    except BadAuthorizationTarget as exc:
        return error_page(call.request, str(exc))
    params = serving.params
    page = {
        "request_id": serving.request_id,
        "client": ClientBrand.of(serving.client),
        "username": call.values.get("username", params.login_hint if params else "") or "",
        "remember": call.values.get("remember") == "yes",
        "self_registration": call.ctx.settings.self_registration,
        "error": shown.error,
        "unverified_email": unverified,
    }
    return render(call.request, "login.html", page, status_code=shown.status_code)


LOGIN = Visit(_login_page, elsewhere={Code.EMAIL_NOT_VERIFIED: Visit(partial(_login_page, unverified=True))})


@visit(LOGIN, Needs(limits=(Limit.SIGN_IN,), lock=False))
def login(call: Visitor) -> Response:
    """The per-account limit counts the identifier as typed, whether or not an account has it."""
    if not call.unsafe:
        return _login_page(call, Shown())
    serving = target(call)
    request_id, client_id = serving.request_id, serving.client.id if serving.client else None
    username, ctx = call.values.get("username", ""), call.ctx
    call.spend(Limit.SIGN_IN_ACCOUNT, account_key(call.request, username))
    password = call.values.get("password", "")
    user = sign_in_with_password(call.db, ctx.settings, ctx.secret_key, username, password, client_id)
    remember = call.values.get("remember") == "yes"
    if user.mfa_method:
        return start_second_factor(call.request, call.db, user, authorization_request_id=request_id, remember=remember)
    return complete_sign_in(
        call.request, call.db, user, amr=["pwd"], authorization_request_id=request_id, remember=remember
    )
