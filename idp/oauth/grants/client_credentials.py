"""The client credentials grant: RFC 6749 §4.4, for confidential clients acting for themselves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from ...storage import Client
from .. import scopes as scope_rules
from ..errors import InvalidScope, UnauthorizedClient
from .issuance import TokenIssuer

GRANT_TYPE = "client_credentials"


def issue(db: Session, issuer: TokenIssuer, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
    if client.is_public:
        raise UnauthorizedClient("this client may not use the client credentials grant")
    allowed = client.scopes - scope_rules.USER_ONLY
    if "scope" in form:
        scope = scope_rules.parse(form["scope"])
        if set(scope) & scope_rules.USER_ONLY:
            raise InvalidScope("openid and offline_access need a person; they are not for client credentials")
        scope_rules.check_allowed(scope, allowed)
    else:
        scope = sorted(allowed)
    return issuer.for_client(db, grant_type=GRANT_TYPE, client=client, scope=scope)
