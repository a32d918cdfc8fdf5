"""The terms page: a person who has not accepted the terms in force (``IDP_TERMS_VERSION``) reads
where they are (``IDP_TERMS_URL``) and accepts them before the authorization request goes on, or
declines, which the application hears as ``access_denied``. Buttons named ``decision``,
``accept`` or ``decline``."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response

from ..accounts import terms
from ..accounts.users import lock_user
from ..catalogs import N_
from ..oauth.authorization import decide, deny, load_pending, needs_sign_in
from ..sso import ActiveSession
from ..web.browser import current_session
from ..web.locale import note_saved, note_ui_locales
from ..web.pipeline import Needs
from ..web.rendering import authorization_response, error_page, next_step, render
from .signin import request_id
from .surface import Shown, Visit, Visitor, visit

EXPIRED = N_("This form has expired. Go back to the application and start again.")
CHOOSE = N_("Choose accept or decline.")


def _expired_page(call: Visitor, shown: Shown) -> Response:
    return error_page(call.request, EXPIRED)


@visit(Visit(_expired_page), Needs(lock=False))
def terms_page(call: Visitor) -> Response:
    pending, client, params = load_pending(call.db, request_id(call))
    note_ui_locales(call.request, params.ui_locales)
    active = current_session(call.request, call.db)
    if needs_sign_in(params, active, pending):
        return RedirectResponse(f"/login?{urlencode({'request': pending.id})}", status_code=303)
    assert active is not None
    note_saved(call.request, active.user.locale)
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
