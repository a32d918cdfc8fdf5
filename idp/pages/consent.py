"""The consent page: buttons named ``decision``, ``allow`` or ``deny``."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response

from ..accounts import terms
from ..catalogs import N_
from ..oauth import scopes
from ..oauth.authorization import deny, issue_code, load_pending, needs_sign_in, record_consent
from ..sso import note_use
from ..web.branding import ClientBrand
from ..web.browser import current_session
from ..web.locale import note_saved, note_ui_locales
from ..web.pipeline import Needs
from ..web.rendering import authorization_response, error_page, render
from .signin import request_id
from .surface import Shown, Visit, Visitor, visit

EXPIRED = N_("This form has expired. Go back to the application and start again.")
CHOOSE = N_("Choose allow or deny.")


def _expired_page(call: Visitor, shown: Shown) -> Response:
    """The one refusal of this form, a CSRF token that does not match: the request may well be
    stale, so back to the application rather than the same buttons."""
    return error_page(call.request, EXPIRED)


@visit(Visit(_expired_page), Needs(lock=False))
def consent(call: Visitor) -> Response:
    pending, client, params = load_pending(call.db, request_id(call))
    note_ui_locales(call.request, params.ui_locales)
    active = current_session(call.request, call.db)
    if needs_sign_in(params, active, pending):
        return RedirectResponse(f"/login?{urlencode({'request': pending.id})}", status_code=303)
    assert active is not None
    if terms.pending(call.ctx.settings, active.user):
        return RedirectResponse(f"/terms?{urlencode({'request': pending.id})}", status_code=303)
    note_use(call.db, active.session)
    note_saved(call.request, active.user.locale)
    if not call.unsafe:
        page = {
            "request_id": pending.id,
            "client": ClientBrand.of(client),
            "account": active.user.email or active.user.phone,
            "scopes": [(s, scopes.DESCRIPTIONS.get(s, s)) for s in params.scope],
        }
        return render(call.request, "consent.html", page)
    decision = call.values.get("decision")
    if decision == "allow":
        # The request is answered first: a second answer racing this one stops there.
        response = authorization_response(call.request, issue_code(call.db, params, active, pending))
        record_consent(call.db, client, params, active.user.id)
        return response
    if decision == "deny":
        return authorization_response(call.request, deny(call.db, params, pending, active.user.id).response)
    return error_page(call.request, CHOOSE)
