"""The hosted pages of a signed-in person as a surface of the request pipeline
(:mod:`idp.web.pipeline`): ``/account``, its email page and ``/account/security``.

A browser without a live session goes to ``/login``. An unsafe request, once its CSRF token is
checked (:class:`~idp.pages.surface.PageForm`), locks the person's row (:func:`lock_person`), so
the actions of two browsers, or of a browser and a reset link, run one after the other; one whose
session the other ended meanwhile goes to ``/login`` instead. Each request served notes the
session's use (:func:`~idp.sso.note_use`): a page at once, a change once the person is locked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts.commands import Actor
from ..accounts.users import lock_user
from ..context import Context
from ..sso import note_use
from ..storage import BrowserSession, now
from ..web.browser import current_session
from ..web.locale import note_saved
from ..web.pipeline import SAFE_METHODS, Answer, Call, Endpoint, Handler, Needs, endpoint
from .surface import PageForm

Person = Call[Actor]


@dataclass(frozen=True)
class Form(PageForm[Actor]):
    """A form of a signed-in person's page."""

    def authenticate(self, request: Request, ctx: Context, db: Session, raw: object) -> Actor:
        """The session's person; a page shown to them notes the session's use now, a change once
        the person's row is locked (:meth:`relock`)."""
        active = current_session(request, db)
        if active is None:
            raise Answer(RedirectResponse("/login", status_code=303))
        if request.method in SAFE_METHODS:
            note_use(db, active.session)
        note_saved(request, active.user.locale)
        return Actor(active.user, active.session.id, active.session.auth_time, None)

    def relock(self, call: Person, raw: object) -> Person:
        session = lock_person(call.db, call.who.user.id, call.who.session_id)
        if session is None:
            raise Answer(RedirectResponse("/login", status_code=303))
        note_use(call.db, session)
        return call


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
