"""The endpoints where a client authenticates (token, revocation, introspection) as a surface of the
request pipeline (:mod:`idp.web.pipeline`).

The body is a form, read in the event loop; a parameter sent twice is refused (RFC 6749 §3.2), and
so is what the endpoint's check (its ``Needs.fields``) finds wrong before anyone is authenticated:
a missing or unsupported ``grant_type``, a missing ``token``. The client then authenticates by the
method it registered: the authenticator checks an assertion in short sessions of its own, its
JWKS fetched outside them, before the request's transaction begins with the client's row. Once
known, the client is counted against its own budget (:func:`throttle_client`), so that nobody else
can spend it. Every refusal is an RFC 6749 §5.2 error, never cached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ..context import Context
from ..errors import Refused
from ..oauth.client_auth import Credentials, read_credentials
from ..oauth.errors import InvalidRequest, OAuthError
from ..security.forms import FormError, given, read_form, single_values
from ..security.rate_limits import Refusal
from ..storage import Client
from ..web.pipeline import Answer, Call, Needs
from .responses import oauth_error
from .throttling import throttle_client, throttled

Check = Callable[[Mapping[str, str]], object]
"""What an endpoint's form must pass before its client authenticates: raises an ``OAuthError``."""


@dataclass(frozen=True)
class Raw:
    form: dict[str, str]
    credentials: Credentials


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
            credentials = read_credentials(request.headers.get("authorization"), form)
        except OAuthError as exc:
            raise Answer(oauth_error(exc)) from None
        return Raw(form, credentials)

    def authenticate(self, request: Request, ctx: Context, db: Session, raw: object) -> Client:
        """The client; a failed authentication, or a spent budget whose audit event the pipeline
        commits with the :class:`Answer`, ends the request here."""
        assert isinstance(raw, Raw)
        try:
            client = ctx.client_authenticator.authenticate(db, raw.credentials)
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
