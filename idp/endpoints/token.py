"""The token endpoint (RFC 6749 §3.2): the authenticated client's grant, from the registry."""

from __future__ import annotations

from starlette.responses import Response

from ..metrics import TOKENS
from ..oauth.grants.registry import grant_for, issue
from ..storage import Client
from ..web.pipeline import Call, Needs, endpoint
from .client_surface import CLIENT, Raw, from_memory
from .responses import json_response


def _token(call: Call[Client]) -> Response:
    body = issue(call.db, call.ctx.token_issuer, call.who, call.values)
    TOKENS.labels(grant_type=call.values["grant_type"]).inc()
    return json_response(body)


def _from_memory(raw: object) -> bool:
    """A client_credentials request needs only the client and the keys, both kept in memory."""
    return from_memory(raw) and isinstance(raw, Raw) and raw.form.get("grant_type") == "client_credentials"


token = endpoint(CLIENT, Needs(fields=grant_for, lock=False, from_memory=_from_memory), _token)
