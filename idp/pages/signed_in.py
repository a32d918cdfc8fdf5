"""The hosted pages of a signed-in person as a surface of the request pipeline
(:mod:`idp.web.pipeline`): ``/account``, its email page and ``/account/security``.

A browser without a live session goes to ``/login``. An unsafe request must carry the page's CSRF
token: a form another site makes a visitor's browser post is answered with the form again, before
it spends any rate limit or writes anything. It then locks the person's row (:func:`lock_person`),
so the actions of two browsers, or of a browser and a reset link, run one after the other; one
whose session the other ended meanwhile goes to ``/login`` instead. Each request served notes the
session's use (:func:`~idp.sso.note_use`): a page at once, a change once the person is locked.

Each form is a :class:`Form`: the page it belongs to, which shows its refusals next to it. A
refusal's words come from :mod:`idp.web.messages`, its status from :data:`STATUS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts.commands import Actor
from ..accounts.errors import AccountError, Code
from ..accounts.users import lock_user
from ..context import Context
from ..errors import Refused
from ..security.rate_limits import Refusal
from ..sso import note_use
from ..storage import BrowserSession, now
from ..web.browser import current_session
from ..web.messages import message
from ..web.pipeline import SAFE_METHODS, Answer, Call, Endpoint, Handler, Needs, actor, endpoint
from ..web.throttling import refusal_page
from .forms import posted_form

EXPIRED_FORM = "This form has expired. Please try again."

STATUS: dict[Code, int] = {
    Code.TOO_MANY_CODES: 429,
    Code.TOO_MANY_EMAILS: 429,
    Code.SESSION_NOT_FOUND: 404,
    Code.ACCOUNT_CHANGED: 409,
}
"""The status of a page that shows a refusal; any code not here is 400."""

Person = Call[Actor]


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


Page = Callable[[Person, Shown], Response]


@dataclass(frozen=True)
class Form:
    """A form of ``page``: the :class:`~idp.web.pipeline.Surface` of the handlers it posts to.
    ``section`` names it on the page; ``refill`` are the fields shown again after a refusal;
    ``elsewhere`` names the form that shows a refusal of one of its codes instead."""

    page: Page
    section: str | None = None
    refill: tuple[str, ...] = ()
    elsewhere: Mapping[Code, Form] = field(default_factory=dict)

    async def read(self, request: Request, needs: Needs) -> object:
        form = await posted_form(request)
        if isinstance(form, Response):
            raise Answer(form)
        return form

    def authenticate(self, request: Request, ctx: Context, db: Session, raw: object) -> Actor:
        """The session's person; a page shown to them notes the session's use now, a change once
        the person's row is locked (:meth:`relock`)."""
        active = current_session(request, db)
        if active is None:
            raise Answer(RedirectResponse("/login", status_code=303))
        if request.method in SAFE_METHODS:
            note_use(db, active.session)
        return actor(request, active.user, active.session.id, active.session.auth_time, None)

    def values(self, call: Person, raw: object, needs: Needs) -> dict[str, str]:
        assert isinstance(raw, dict)
        if call.unsafe and not call.ctx.csrf.valid(call.request, raw.get("csrf_token")):
            raise Answer(self.page(call, Shown(error=EXPIRED_FORM, status_code=400)))
        return raw

    def relock(self, call: Person, raw: object) -> Person:
        session = lock_person(call.db, call.who.user.id, call.who.session_id)
        if session is None:
            raise Answer(RedirectResponse("/login", status_code=303))
        note_use(call.db, session)
        return call

    def refused(self, call: Person, refusal: Refusal) -> Response:
        return refusal_page(call.request, refusal, call.db)

    def failed(self, call: Person, error: Refused) -> Response:
        assert isinstance(error, AccountError)
        if error.code in self.elsewhere:
            return self.elsewhere[error.code].failed(call, error)
        shown = Shown(
            error=message(error),
            section=self.section,
            wait=error.wait,
            values={name: call.values.get(name, "") for name in self.refill},
            status_code=STATUS.get(error.code, 400),
        )
        return self.page(call, shown)


def signed_in(form: Form, needs: Needs | None = None) -> Callable[[Handler[Actor]], Endpoint]:
    """Make ``handler`` an endpoint of ``form``'s page for a signed-in person."""

    def wrap(handler: Handler[Actor]) -> Endpoint:
        return endpoint(form, needs or Needs(), handler)

    return wrap


def lock_person(db: Session, user_id: str, session_id: str | None) -> BrowserSession | None:
    """Lock the signed-in person's row, first of all; their session if it still lives and the
    account may still act.

    Once the lock is ours, any action that got it first is done, and may have ended this session or
    disabled the account. Noting the session's use (:func:`~idp.sso.note_use`) comes after: this
    request must not hold the session row while waiting for the person, as a reset holding the
    person waits to end that session.
    """
    user = lock_user(db, user_id)
    session = db.scalar(
        select(BrowserSession).where(
            BrowserSession.id == session_id,
            BrowserSession.ended_at.is_(None),
            BrowserSession.expires_at > now(),
        )
    )
    return session if user is not None and not user.disabled else None


def done(what: str) -> Response:
    """Post/redirect/get: reloading the page never submits twice."""
    return RedirectResponse(f"/account?done={what}", status_code=303)
