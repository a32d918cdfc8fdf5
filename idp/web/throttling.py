"""How the hosted pages answer a spent rate limit (the request pipeline spends them, after a
form's CSRF check, so that a form another site makes a visitor's browser post spends none of their
budget), and the key of the per-account sign-in limit.

A refused form gets a 429 page with ``Retry-After`` and an audit event. The per-account sign-in
limit counts the identifier as typed, normalised and keyed, whether or not an account has it, so
its refusal says nothing about which accounts exist and no address reaches Redis.
"""

from __future__ import annotations

import math

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from .. import audit
from ..accounts.challenges import parse_identifier
from ..accounts.errors import AccountError
from ..audit import Event
from ..catalogs import N_
from ..security.digests import keyed_digest
from ..security.rate_limits import Refusal
from .locale import translate
from .rendering import message_page
from .request import context


def account_key(request: Request, account: str) -> str:
    """The key of the per-account sign-in limit: the identifier as typed, normalised and keyed."""
    ctx = context(request)
    try:
        identifier = parse_identifier(account, ctx.settings.phone_default_region).value
    except AccountError:
        identifier = account.strip().lower()
    return keyed_digest(ctx.secret_key, "rate limit account:" + identifier)


def refusal_page(request: Request, refusal: Refusal, db: Session) -> Response:
    """The 429 page of a spent limit; its audit event is written in ``db``, which the request
    pipeline commits after rolling back what came before."""
    response = message_page(request, refusal_notice(request, refusal, db), 429)
    response.headers["Retry-After"] = str(refusal.retry_after)
    return response


def refusal_notice(request: Request, refusal: Refusal, db: Session) -> str:
    """The sentence of a spent limit in the request's language, its audit event written in ``db``:
    for a page that tells of the refusal rather than being it."""
    audit.record(db, Event.RATE_LIMITED, outcome="failure", detail={"limit": refusal.limit.value})
    sentence, wait = _too_many(refusal.retry_after)
    return translate(request, sentence, **wait)


def _too_many(seconds: int) -> tuple[str, dict[str, int]]:
    """The sentence of a spent limit, its wait in seconds when short, else in whole minutes."""
    if seconds < 120:
        return N_("Too many attempts. Please try again in {seconds} seconds."), {"seconds": seconds}
    return N_("Too many attempts. Please try again in {minutes} minutes."), {"minutes": math.ceil(seconds / 60)}
