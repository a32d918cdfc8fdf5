"""The terms page: a person who has not accepted the terms in force (``IDP_TERMS_VERSION``) reads
where they are (``IDP_TERMS_URL``) and accepts them before the authorization request goes on, or
declines, which the application hears as ``access_denied``. Buttons named ``decision``,
``accept`` or ``decline``."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from ..accounts import terms
from ..accounts.users import lock_user
from ..catalogs import N_
from ..oauth.authorization import decide, deny
from ..sso import ActiveSession
from ..web.pipeline import Needs
from ..web.rendering import authorization_response, error_page, next_step, render
from .surface import Visitor, visit
from .waiting_request import WAITING, waiting

CHOOSE = N_("Choose accept or decline.")


@visit(WAITING, Needs(lock=False))
def terms_page(call: Visitor) -> Response:
    found = waiting(call)
    if isinstance(found, RedirectResponse):
        return found
    pending, client, params, active = found.pending, found.client, found.params, found.active
    settings = call.ctx.settings
    if not terms.pending(settings, active.user):
        return next_step(
            call.request, decide(call.db, client, params, active, pending, terms_version=settings.terms_version)
        )
    if not call.unsafe:
        page = {"request_id": pending.id, "client_name": client.name, "terms_url": settings.terms_url}
        return render(call.request, "terms.html", page)
    decision = call.values.get("decision")
    if decision == "decline":
        return authorization_response(call.request, deny(call.db, params, pending, active.user.id).response)
    if decision != "accept":
        return error_page(call.request, CHOOSE)
    user = lock_user(call.db, active.user.id)
    assert user is not None, "a signed-in person's account is there"
    terms.accept(call.db, settings, user, client.id)
    step = decide(
        call.db, client, params, ActiveSession(active.session, user), pending, terms_version=settings.terms_version
    )
    return next_step(call.request, step)
