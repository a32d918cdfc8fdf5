"""The rate limit of the endpoints where a client authenticates: token, revocation, introspection.

A client is counted once it has authenticated, so no one else can spend its budget by sending
requests in its name. A refusal is audited in the request's transaction, which the request
pipeline commits.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request

from .. import audit
from ..audit import Event
from ..oauth.errors import TemporarilyUnavailable
from ..security.rate_limits import CountInRedis, Limit, Refusal
from ..storage import Client
from ..storage.database import is_in_memory_only
from ..web.request import context


def throttle_client(request: Request, db: Session, client: Client) -> None:
    """Count this request of ``client``, once however often the request is tried (first in the
    event loop, then in a thread); over its limit, audit the refusal and raise a 429. A count
    kept in Redis is a round trip: where the request may not block, the pipeline makes it
    without blocking and serves the request again (:class:`CountInRedis`)."""
    refusal = getattr(request.state, "client_refusal", _UNCOUNTED)
    if refusal is _UNCOUNTED:
        limiter = context(request).rate_limiter
        if limiter.waits(Limit.TOKEN) and is_in_memory_only(db):
            raise CountInRedis(
                Limit.TOKEN, client.id, lambda counted: setattr(request.state, "client_refusal", counted)
            )
        refusal = limiter.check(Limit.TOKEN, client.id)
        request.state.client_refusal = refusal
    if isinstance(refusal, Refusal):
        raise throttled(db, refusal, client_id=client.id)


_UNCOUNTED = object()


def throttled(db: Session, refusal: Refusal, *, client_id: str) -> TemporarilyUnavailable:
    """The 429 of a spent ``refusal``, its audit event written in ``db``."""
    audit.record(db, Event.RATE_LIMITED, outcome="failure", client_id=client_id, detail={"limit": refusal.limit.value})
    if refusal.limit is Limit.TOKEN:
        spent = "this client sent too many requests"
    else:
        spent = "too many attempts from this address or for this account lately"
    return TemporarilyUnavailable(f"{spent}; retry after the time in Retry-After", retry_after=refusal.retry_after)
