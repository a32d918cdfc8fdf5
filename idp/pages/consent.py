"""The consent page: buttons named ``decision``, ``allow`` or ``deny``."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from ..accounts import terms
from ..catalogs import N_
from ..oauth import scopes
from ..oauth.authorization import deny, end, issue_code, record_consent, unmet
from ..sso import note_use
from ..web.branding import ClientBrand
from ..web.pipeline import Needs
from ..web.rendering import authorization_response, error_page, render
from .surface import Visitor, visit
from .waiting_request import WAITING, waiting

CHOOSE = N_("Choose allow or deny.")


@visit(WAITING, Needs(lock=False))
def consent(call: Visitor) -> Response:
    found = waiting(call)
    if isinstance(found, RedirectResponse):
        return found
    pending, client, params, active = found.pending, found.client, found.params, found.active
    if terms.pending(call.ctx.settings, active.user):
        return found.page("/terms")
    note_use(call.db, active.session)
    if not call.unsafe:
        page = {
            "request_id": pending.id,
            "client": ClientBrand.of(client),
            "account": active.user.email or active.user.phone,
            "scopes": [(s, scopes.DESCRIPTIONS.get(s, s)) for s in params.agreed_scope()],
        }
        return render(call.request, "consent.html", page)
    decision = call.values.get("decision")
    if decision == "allow":
        # A sign-in made without this request may fall short of it (an essential acr).
        refused = unmet(params, active.user.id, active.session.amr)
        if refused is not None:
            return authorization_response(call.request, end(call.db, params, pending, refused).response)
        # The request is answered first: a second answer racing this one stops there.
        response = authorization_response(call.request, issue_code(call.db, params, active, pending))
        record_consent(call.db, client, params, active.user.id)
        return response
    if decision == "deny":
        return authorization_response(call.request, deny(call.db, params, pending, active.user.id).response)
    return error_page(call.request, CHOOSE)
