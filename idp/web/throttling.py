"""Rate limits on the hosted pages' forms: one call in each POST handler, right after its CSRF
check, so that a form another site makes a visitor's browser post spends none of their budget.

A refused form gets a 429 page with ``Retry-After`` and an audit event. The per-account sign-in
limit counts the identifier as typed, normalised and keyed, whether or not an account has it, so
its refusal says nothing about which accounts exist and no address reaches Redis.
"""

from __future__ import annotations

import math

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ..accounts.challenges import parse_identifier
from ..accounts.errors import AccountError
from ..audit import Event
from ..security.digests import keyed_digest
from ..security.rate_limits import Limit, Refusal
from .rendering import error_page
from .request import audit, context, rate_limit_address


def throttled(
    request: Request, *limits: Limit, account: str | None = None, db: Session | None = None
) -> Response | None:
    """Count this request against each of ``limits`` for the client's address, and against the
    per-account sign-in limit for ``account`` when given; the 429 page if one is spent.

    A handler that already holds a database session passes it as ``db``: a refusal's audit event
    is committed in it rather than in a second session that could wait on the first.
    """
    ctx = context(request)
    address = rate_limit_address(request)
    checks = [(limit, address) for limit in limits]
    if account is not None:
        checks.append((Limit.SIGN_IN_ACCOUNT, account_key(request, account)))
    for limit, key in checks:
        refusal = ctx.rate_limiter.check(limit, key)
        if refusal is not None:
            return refusal_page(request, refusal, db)
    return None


def throttled_writes(request: Request, limit: Limit, db: Session) -> Response | None:
    """Count this request against ``limit`` for the client's address, where what the limit
    protects is what the handler has written in ``db`` and not yet committed: a refusal rolls
    that back, so that nothing of it is stored, and commits only its audit event."""
    refusal = context(request).rate_limiter.check(limit, rate_limit_address(request))
    if refusal is None:
        return None
    db.rollback()
    return refusal_page(request, refusal, db)


def account_key(request: Request, account: str) -> str:
    """The key of the per-account sign-in limit: the identifier as typed, normalised and keyed."""
    ctx = context(request)
    try:
        identifier = parse_identifier(account, ctx.settings.phone_default_region).value
    except AccountError:
        identifier = account.strip().lower()
    return keyed_digest(ctx.secret_key, "rate limit account:" + identifier)


def refusal_page(request: Request, refusal: Refusal, db: Session | None) -> Response:
    """The 429 page of a spent limit; its audit event is committed, in ``db`` when given."""
    if db is None:
        with context(request).db() as own:
            _audit(request, own, refusal)
    else:
        _audit(request, db, refusal)
    response = error_page(request, f"Too many attempts. Please try again in {_wait(refusal.retry_after)}.", 429)
    response.headers["Retry-After"] = str(refusal.retry_after)
    return response


def _audit(request: Request, db: Session, refusal: Refusal) -> None:
    audit(request, db, Event.RATE_LIMITED, outcome="failure", detail={"limit": refusal.limit.value})
    db.commit()


def _wait(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"
