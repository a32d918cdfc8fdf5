"""The end-session endpoint and its confirmation page (button ``decision`` = ``logout``).

RP-Initiated Logout §2: the parameters come by GET or by POST, and a relying party's POST carries
no CSRF token of ours. So only the confirmation, which ends the session on the person's say-so,
must carry one (:class:`Logout`); a request that names the session by its ``id_token_hint`` ends
it without asking.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..catalogs import N_
from ..oauth.logout import parse_logout
from ..sso import sign_out
from ..web.browser import clear_session_cookie, session_to_end
from ..web.pipeline import Answer, Needs
from ..web.rendering import error_page, render, with_query
from .surface import Shown, Visit, Visitor, visit

EXPIRED = N_("This form has expired. Please sign out again.")
CHOOSE = N_("Choose to sign out, or close this page.")


def _expired_page(call: Visitor, shown: Shown) -> Response:
    return error_page(call.request, EXPIRED)


@dataclass(frozen=True)
class Logout(Visit):
    """Parameters from the query or the form; the CSRF token only on the confirmation."""

    async def read(self, request: Request, needs: Needs) -> object:
        if request.method == "POST":
            return await super().read(request, needs)
        return dict(request.query_params)

    def values(self, call: Visitor, raw: object, needs: Needs) -> dict[str, str]:
        assert isinstance(raw, dict)
        if "decision" not in raw:
            return raw
        if not call.unsafe or not call.ctx.csrf.valid(call.request, raw.get("csrf_token")):
            raise Answer(self.page(call, Shown(status_code=400)))
        if raw["decision"] != "logout":
            raise Answer(error_page(call.request, CHOOSE))
        return raw


@visit(Logout(_expired_page))
def logout(call: Visitor) -> Response:
    ask = parse_logout(call.db, call.ctx.keyring, call.ctx.settings.issuer, call.values)
    active = session_to_end(call.request, call.db)
    if active is not None and "decision" not in call.values and not ask.hint_names(active):
        page = {
            "client_id": ask.client.id if ask.client else None,
            "client_name": ask.client.name if ask.client else None,
            "post_logout_redirect_uri": ask.post_logout_redirect_uri,
            "state": ask.state,
        }
        return render(call.request, "logout_confirm.html", page)
    if active is not None:
        sign_out(call.db, active, ask.client.id if ask.client else None)
    response: Response
    if ask.post_logout_redirect_uri is not None:
        params = {"state": ask.state} if ask.state is not None else {}
        response = RedirectResponse(with_query(ask.post_logout_redirect_uri, params), status_code=303)
    else:
        response = render(call.request, "signed_out.html")
    clear_session_cookie(call.request, response)
    return response
