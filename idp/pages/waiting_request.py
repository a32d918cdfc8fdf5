"""What the pages a signed-in person answers for a waiting authorization request share: the
consent page, the terms page and the page asking for the second factor alone.

Each reads the request, in its language; sends a browser that must sign in (again) to the sign-in
page, so that going straight to one of them cannot skip a forced sign-in; and answers a form
whose CSRF token does not match by sending the person back to the application, as the request
may well be stale."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response

from ..catalogs import N_
from ..oauth.authorization import AuthorizationParams, load_pending, needs_sign_in, second_factor_suffices
from ..sso import ActiveSession
from ..storage import AuthorizationRequest, Client
from ..web.browser import current_session
from ..web.locale import note_saved, note_ui_locales
from ..web.rendering import error_page
from .signin import request_id
from .surface import Shown, Visit, Visitor

EXPIRED = N_("This form has expired. Go back to the application and start again.")


@dataclass(frozen=True)
class Waiting:
    pending: AuthorizationRequest
    client: Client
    params: AuthorizationParams
    active: ActiveSession

    def page(self, name: str) -> RedirectResponse:
        """Another page of this request (``/login``, ``/terms``)."""
        return RedirectResponse(f"{name}?{urlencode({'request': self.pending.id})}", status_code=303)


def waiting(call: Visitor, *, stepping_up: bool = False) -> Waiting | RedirectResponse:
    """The request and the person answering it, or the sign-in page it needs first: the page
    asking for the second factor alone where that suffices, which itself is ``stepping_up``."""
    pending, client, params = load_pending(call.db, request_id(call))
    note_ui_locales(call.request, params.ui_locales)
    active = current_session(call.request, call.db)
    if needs_sign_in(params, active, pending):
        if not second_factor_suffices(params, active):
            return RedirectResponse(f"/login?{urlencode({'request': pending.id})}", status_code=303)
        if not stepping_up:
            return RedirectResponse(f"/login/step-up?{urlencode({'request': pending.id})}", status_code=303)
    assert active is not None
    note_saved(call.request, active.user.locale)
    return Waiting(pending, client, params, active)


def _expired_page(call: Visitor, shown: Shown) -> Response:
    return error_page(call.request, EXPIRED)


WAITING = Visit(_expired_page)
"""The form of a page for a waiting request: a stale one goes back to the application."""
