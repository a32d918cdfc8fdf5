"""The endpoints where a client authenticates (token, revocation, introspection) as a surface of the
request pipeline (:mod:`idp.web.pipeline`).

The body is a form, read in the event loop; a parameter sent twice is refused (RFC 6749 §3.2), and
so is what the endpoint's check (its ``Needs.fields``) finds wrong before anyone is authenticated:
a missing or unsupported ``grant_type``, a missing ``token``. The client then authenticates by the
method it registered: the authenticator checks an assertion in short sessions of its own, its JWKS
fetched outside them, before the request's transaction begins with the client's row. Once known,
the client is counted against its own budget, a public client's per client address
(:func:`throttle_client`), so that nobody else can spend it. Every refusal is an RFC 6749 §5.2
error, never cached. The client the request names is noted for CORS (:mod:`idp.web.cors`) before it
authenticates, so that a browser app on one of its origins can read why it was refused. A refused
authentication is logged and audited with why (:class:`~idp.oauth.errors.ClientAuthFailure`) and
the client it named, never what it presented.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from .. import audit
from ..audit import Event
from ..context import Context
from ..errors import Refused
from ..oauth.client_auth import MAX_CLIENT_ID, Credentials, read_credentials
from ..oauth.errors import InvalidClient, InvalidRequest, OAuthError
from ..security.forms import FormError, given, read_form, single_values
from ..security.rate_limits import Refusal
from ..storage import Client
from ..storage.database import require_database
from ..web.cors import note_client
from ..web.pipeline import Answer, Call, Needs
from .responses import oauth_error
from .throttling import throttle_client, throttled

log = logging.getLogger("idp.client_auth")

Check = Callable[[Mapping[str, str]], object]
"""What an endpoint's form must pass before its client authenticates: raises an ``OAuthError``."""


@dataclass(frozen=True)
class Raw:
    form: dict[str, str]
    credentials: Credentials | InvalidClient
    """What the client presented, or why it could not be read (refused once the refusal can be
    audited)."""


def from_memory(raw: object) -> bool:
    """Whether the client sent a secret (or none, being public), which the process checks against
    the clients it keeps in memory; an assertion is checked against keys that may need fetching,
    and its ``jti`` spent, so it is never served from memory."""
    return (
        isinstance(raw, Raw)
        and isinstance(raw.credentials, Credentials)
        and raw.credentials.method != "private_key_jwt"
    )


class ClientSurface:
    """``Needs.fields`` is the endpoint's :data:`Check`; ``Needs.lock`` must be ``False``: a client
    has no person's row to lock."""

    async def read(self, request: Request, needs: Needs) -> object:
        try:
            pairs = await read_form(request, require_form_type=True)
        except FormError as exc:
            raise Answer(oauth_error(InvalidRequest(str(exc)))) from None
        form, repeated = single_values(given(pairs))
        try:
            if repeated:
                raise InvalidRequest(f"parameters sent more than once: {', '.join(sorted(repeated))}")
            if callable(needs.fields):
                needs.fields(form)
            credentials: Credentials | InvalidClient = read_credentials(request.headers.get("authorization"), form)
        except InvalidClient as exc:
            credentials = exc
        except OAuthError as exc:
            raise Answer(oauth_error(exc)) from None
        note_client(request, credentials.client_id if isinstance(credentials, Credentials) else None)
        return Raw(form, credentials)

    def authenticate(self, request: Request, ctx: Context, db: Session, raw: object) -> Client:
        """The client; a failed authentication, or a spent budget whose audit event the pipeline
        commits with the :class:`Answer`, ends the request here."""
        assert isinstance(raw, Raw)
        credentials = raw.credentials
        try:
            if isinstance(credentials, InvalidClient):
                raise credentials
            client = ctx.client_authenticator.authenticate(db, credentials)
        except InvalidClient as exc:
            _refused(db, exc, credentials if isinstance(credentials, Credentials) else None)
            raise Answer(oauth_error(exc)) from None
        try:
            throttle_client(request, db, client)
        except OAuthError as exc:
            raise Answer(oauth_error(exc)) from None
        return client

    def values(self, call: Call[Client], raw: object, needs: Needs) -> dict[str, str]:
        assert isinstance(raw, Raw)
        return raw.form

    def relock(self, call: Call[Client], raw: object) -> Call[Client]:
        raise AssertionError("the endpoints where a client authenticates lock no person: Needs(lock=False)")

    def refused(self, call: Call[Client], refusal: Refusal) -> Response:
        return oauth_error(throttled(call.db, refusal, client_id=call.who.id))

    def failed(self, call: Call[Client], error: Refused) -> Response:
        assert isinstance(error, OAuthError)
        return oauth_error(error)


CLIENT = ClientSurface()


def _refused(db: Session, error: InvalidClient, credentials: Credentials | None) -> None:
    """Log and audit a refused client authentication, in the transaction its answer commits; the
    client it named only if that can be a client's id. Never from memory: logged once."""
    require_database(db)
    method = credentials.method if credentials is not None else None
    client_id = credentials.client_id if credentials is not None else None
    if client_id is not None and len(client_id) > MAX_CLIENT_ID:
        client_id = None
    log.warning("client authentication refused: client_id=%r method=%s reason=%s", client_id, method, error.reason)
    audit.record(
        db,
        Event.CLIENT_AUTHENTICATION_FAILED,
        outcome="failure",
        client_id=client_id,
        detail={"reason": error.reason.value, "method": method},
    )
