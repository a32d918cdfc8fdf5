"""The endpoints where a client authenticates to ask about a token: revocation (RFC 7009 §2)
and introspection (RFC 7662 §2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from starlette.responses import Response

from ..oauth.errors import ClientAuthFailure, InvalidClient, InvalidRequest
from ..oauth.introspection import introspect
from ..oauth.revocation import revoke
from ..storage import Client
from ..web.pipeline import Call, Needs, endpoint
from .client_surface import CLIENT, Raw, from_memory
from .responses import json_response


def _token_required(form: Mapping[str, str]) -> None:
    if "token" not in form:
        raise InvalidRequest("token is required")


def _an_access_token(raw: object) -> bool:
    """An access token found unrevoked before is answered from memory; a refresh token is looked up."""
    return from_memory(raw) and isinstance(raw, Raw) and raw.form.get("token", "").count(".") == 2


ABOUT_A_TOKEN = Needs(fields=_token_required, lock=False)


def _revoke(call: Call[Client]) -> Response:
    ctx = call.ctx
    token, hint = call.values["token"], call.values.get("token_type_hint")
    revoke(call.db, ctx.keyring, ctx.settings.issuer, call.who, token, hint)
    return Response(status_code=200, headers={"Cache-Control": "no-store"})


def _introspect(call: Call[Client]) -> Response:
    """RFC 7662 §2.1: the caller must be a confidential client."""
    if call.who.is_public:
        raise InvalidClient("public clients cannot introspect tokens", reason=ClientAuthFailure.PUBLIC_CLIENT)
    ctx = call.ctx
    token, hint = call.values["token"], call.values.get("token_type_hint")
    answer = introspect(call.db, ctx.keyring, ctx.live_tokens, ctx.settings.issuer, call.who.id, token, hint)
    return json_response(answer)


revocation = endpoint(CLIENT, ABOUT_A_TOKEN, _revoke)
introspection = endpoint(CLIENT, replace(ABOUT_A_TOKEN, from_memory=_an_access_token), _introspect)
