"""The page that asks a signed-in person for their second factor alone, when an application insists
on the ``acr`` it reaches (OIDC Core §5.5.1.1) and the session was made with the password only.

Its button starts the second factor, which sends the code by email or SMS: anyone can link a
browser here, so opening the page sends nothing. The code page then finishes the sign-in as after
a password: a new session (the old one ends with it) whose ``amr`` is the password's and the
second factor's, and ``auth_time`` now."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from ..oauth.authorization import decide, needs_sign_in
from ..security.rate_limits import Limit
from ..storage import BrowserSession
from ..web.branding import ClientBrand
from ..web.pipeline import Needs
from ..web.rendering import next_step, render
from .signin import start_second_factor
from .surface import Visitor, visit
from .waiting_request import WAITING, waiting


@visit(WAITING, Needs(limits=(Limit.VERIFICATION,), lock=False))
def step_up(call: Visitor) -> Response:
    """Each press sends a code, so it spends what asking for a code again spends."""
    found = waiting(call, stepping_up=True)
    if isinstance(found, RedirectResponse):
        return found
    pending, client, params, active = found.pending, found.client, found.params, found.active
    if not needs_sign_in(params, active, pending):
        terms_version = call.ctx.settings.terms_version
        return next_step(call.request, decide(call.db, client, params, active, pending, terms_version=terms_version))
    if not call.unsafe:
        page = {
            "request_id": pending.id,
            "client": ClientBrand.of(client),
            "account": active.user.email or active.user.phone,
            "method": active.user.mfa_method,
        }
        return render(call.request, "step_up.html", page)
    return start_second_factor(
        call.request,
        call.db,
        active.user,
        authorization_request_id=pending.id,
        first_factor=tuple(active.session.amr),
        remember=_remembered(call, active.session),
    )


def _remembered(call: Visitor, session: BrowserSession) -> bool:
    """Whether the person asked to stay signed in when they made ``session``: the new session is
    as long, or as short, as theirs was."""
    return session.expires_at - session.created_at > call.ctx.settings.session_ttl
