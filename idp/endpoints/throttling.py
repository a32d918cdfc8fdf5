"""The rate limit of the endpoints where a client authenticates: token, revocation, introspection,
the authorization challenge.

A client is counted once it has authenticated, so that only its owner can spend its budget. A
confidential client proved a secret or a key, and has one budget wherever its requests come from.
A public client proves nothing but its name, which anyone can send: it has a budget per client
address, so that a stranger who sends requests in its name spends only their own share and none
of its users'. A refusal is audited in the request's transaction, which the request pipeline
commits.
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
from ..web.request import context, rate_limit_address


def throttle_client(request: Request, db: Session, client: Client) -> None:
    """Count this request of ``client``, once however often the request is tried (first in the
    event loop, then in a thread); over its limit, audit the refusal and raise a 429. A count
    kept in Redis is a round trip: where the request may not block, the pipeline makes it
    without blocking and serves the request again (:class:`CountInRedis`)."""
    refusal = getattr(request.state, "client_refusal", _UNCOUNTED)
    if refusal is _UNCOUNTED:
        limiter = context(request).rate_limiter
        key = _budget_key(request, client)
        if limiter.waits(Limit.TOKEN) and is_in_memory_only(db):
            raise CountInRedis(Limit.TOKEN, key, lambda counted: setattr(request.state, "client_refusal", counted))
        refusal = limiter.check(Limit.TOKEN, key)
        request.state.client_refusal = refusal
    if isinstance(refusal, Refusal):
        raise throttled(db, refusal, client_id=client.id)


_UNCOUNTED = object()


def _budget_key(request: Request, client: Client) -> str:
    """Whose budget a request of ``client`` spends: the client's, or for a public client, which
    anyone can name, the client's at the request's address (two identifiers, joined as the rate
    limiter joins the parts of a key; a client id has no ``/``)."""
    if client.is_public:
        return f"{client.id}/{rate_limit_address(request)}"
    return client.id


def throttled(db: Session, refusal: Refusal, *, client_id: str) -> TemporarilyUnavailable:
    """The 429 of a spent ``refusal``, its audit event written in ``db``."""
    audit.record(db, Event.RATE_LIMITED, outcome="failure", client_id=client_id, detail={"limit": refusal.limit.value})
    if refusal.limit is Limit.TOKEN:
        spent = "this client sent too many requests"
    else:
        spent = "too many attempts from this address or for this account lately"
    return TemporarilyUnavailable(f"{spent}; retry after the time in Retry-After", retry_after=refusal.retry_after)
