"""The hosted pages' forms as surfaces of the request pipeline (:mod:`idp.web.pipeline`).

A form belongs to a page, which shows its refusals next to it. An unsafe request must carry the
page's CSRF token: a form another site makes a visitor's browser post is answered with the page
again, before it spends any rate limit or writes anything. A refusal's words come from
:mod:`idp.web.messages`, its status from :data:`STATUS`; a spent rate limit is the 429 page.

:class:`Visit` serves the pages of someone not signed in (yet); the pages of a signed-in person
are :class:`idp.pages.signed_in.Form`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ..accounts.errors import AccountError, Code
from ..catalogs import N_
from ..context import Context
from ..errors import Refused
from ..oauth.errors import BadAuthorizationTarget
from ..security.rate_limits import Refusal
from ..web.locale import language, translate
from ..web.messages import message
from ..web.pipeline import Answer, Call, Endpoint, Handler, Needs, endpoint
from ..web.rendering import error_page, message_page
from ..web.throttling import refusal_page
from .forms import posted_form

Who = TypeVar("Who")

EXPIRED_FORM = N_("This form has expired. Please try again.")

STATUS: dict[Code, int] = {
    Code.TOO_MANY_CODES: 429,
    Code.TOO_MANY_EMAILS: 429,
    Code.SESSION_NOT_FOUND: 404,
    Code.EMAIL_TAKEN: 409,
    Code.USERNAME_TAKEN: 409,
    Code.ACCOUNT_CHANGED: 409,
}
"""The status of a page that shows a refusal; any code not here is 400."""


@dataclass(frozen=True)
class Shown:
    """What a page shows besides itself: a refusal next to ``section``'s form, a notice, the
    seconds before a code may be asked for again, and what was typed."""

    error: str | None = None
    notice: str | None = None
    section: str | None = None
    wait: int | None = None
    values: dict[str, str] = field(default_factory=dict)
    status_code: int = 200


@dataclass(frozen=True)
class PageForm(Generic[Who]):
    """A form of ``page``. ``section`` names it on the page; ``refill`` are the fields shown again
    after a refusal; ``elsewhere`` names the form that shows a refusal of one of its codes instead."""

    page: Callable[[Call[Who], Shown], Response]
    section: str | None = None
    refill: tuple[str, ...] = ()
    elsewhere: Mapping[Code, PageForm[Who]] = field(default_factory=dict)

    async def read(self, request: Request, needs: Needs) -> object:
        form = await posted_form(request)
        if isinstance(form, Response):
            raise Answer(form)
        return form

    def values(self, call: Call[Who], raw: object, needs: Needs) -> dict[str, str]:
        assert isinstance(raw, dict)
        if call.unsafe and not call.ctx.csrf.valid(call.request, raw.get("csrf_token")):
            call.values = raw
            raise Answer(self.page(call, Shown(error=translate(call.request, EXPIRED_FORM), status_code=400)))
        return raw

    def refused(self, call: Call[Who], refusal: Refusal) -> Response:
        return refusal_page(call.request, refusal, call.db)

    def failed(self, call: Call[Who], error: Refused) -> Response:
        if isinstance(error, BadAuthorizationTarget):
            return error_page(call.request, str(error))
        assert isinstance(error, AccountError)
        if error.code in self.elsewhere:
            return self.elsewhere[error.code].failed(call, error)
        shown = Shown(
            error=message(error, language(call.request)),
            section=self.section,
            wait=error.wait,
            values={name: call.values.get(name, "") for name in self.refill},
            status_code=STATUS.get(error.code, 400),
        )
        response = self.page(call, shown)
        if error.wait is not None and response.status_code == 429:
            response.headers["Retry-After"] = str(error.wait)
        return response


@dataclass(frozen=True)
class Visit(PageForm[None]):
    """A form anyone may post: signing in, registering, asking for a reset."""

    def authenticate(self, request: Request, ctx: Context, db: Session, raw: object) -> None:
        return None

    def relock(self, call: Call[None], raw: object) -> Call[None]:
        return call


Visitor = Call[None]


def _error_page(call: Visitor, shown: Shown) -> Response:
    return message_page(call.request, shown.error or "", shown.status_code)


ERROR_PAGE = Visit(_error_page)
"""Where a refusal that ends what the person was doing is shown: a page of its own."""


def visit(form: Visit, needs: Needs | None = None) -> Callable[[Handler[None]], Endpoint]:
    """Make ``handler`` an endpoint of ``form``'s page, for anyone."""

    def wrap(handler: Handler[None]) -> Endpoint:
        return endpoint(form, needs or Needs(lock=False), handler)

    return wrap
