"""The grants of the token endpoint, by ``grant_type``.

Each grant is a module of this package with a ``GRANT_TYPE`` and an ``issue`` of the one
:data:`TokenGrant` signature; a new one (the device grant, token exchange) is its module and its
line in :data:`GRANTS`. The token endpoint (through :func:`issue`, which checks once for every
grant that the client is registered for it), the grants a client may be registered for, and the
discovery document's ``grant_types_supported`` all read this table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from ...storage import Client
from ..errors import UnauthorizedClient, UnsupportedGrantType
from . import authorization_code, client_credentials, refresh_token
from .issuance import TokenIssuer
from .parameters import required

TokenGrant = Callable[[Session, TokenIssuer, Client, Mapping[str, str]], dict[str, Any]]
"""Issue the token response for an authenticated client's request, in the request's transaction,
or raise an :class:`~idp.oauth.errors.OAuthError`."""

GRANTS: Mapping[str, TokenGrant] = {
    authorization_code.GRANT_TYPE: authorization_code.issue,
    refresh_token.GRANT_TYPE: refresh_token.issue,
    client_credentials.GRANT_TYPE: client_credentials.issue,
}


def grant_for(form: Mapping[str, str]) -> TokenGrant:
    """The grant the request asks for; RFC 6749 §5.2 ``unsupported_grant_type`` for one not here."""
    grant_type = required(form, "grant_type")
    grant = GRANTS.get(grant_type)
    if grant is None:
        raise UnsupportedGrantType(f"grant_type {grant_type[:64]!r} is not supported")
    return grant


def issue(db: Session, issuer: TokenIssuer, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
    """The token response of the grant the request asks for, for a client registered for it
    (RFC 6749 §5.2 ``unauthorized_client`` otherwise)."""
    grant = grant_for(form)
    if form["grant_type"] not in client.grant_types:
        raise UnauthorizedClient(f"this client may not use the {form['grant_type']} grant")
    return grant(db, issuer, client, form)
