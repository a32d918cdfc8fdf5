"""The language switcher on every page: a form whose buttons are named ``locale``.

Picking a language remembers it in this browser (the ``idp_locale`` cookie) and, for a signed-in
person, on their account, so that their messages and their pages on any device use it too. The
form posts with the page's CSRF token like every other, and goes back only to a path on this site.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from ..accounts import commands
from ..accounts.commands import Actor
from ..web.browser import current_session
from ..web.locale import choose, local_path
from .signed_in import lock_person
from .surface import ERROR_PAGE, Visitor, visit


@visit(ERROR_PAGE)
def switch_language(call: Visitor) -> Response:
    response = RedirectResponse(local_path(call.request.query_params.get("next")), status_code=303)
    tag = call.values.get("locale", "")
    if tag not in call.ctx.languages.by_tag:
        return response
    choose(call.request, response, tag)
    active = current_session(call.request, call.db)
    if active is not None and lock_person(call.db, active.user.id, active.session.id) is not None:
        person = Actor(active.user, active.session.id, active.session.auth_time, None)
        commands.update_profile(call.db, person, {"locale": tag})
    return response
