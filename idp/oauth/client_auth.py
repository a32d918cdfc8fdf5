"""Client authentication at the token, revocation and introspection endpoints.

``client_secret_basic`` and ``client_secret_post`` (RFC 6749 §2.3.1), ``private_key_jwt``
(RFC 7523 §2.2 and §3, OIDC Core §9) and ``none`` for public clients. A client registered with a
secret but without naming how it sends it (:attr:`Client.auth_method_pinned` false) may send it
either way, as relying-party libraries differ in which they use at their defaults; otherwise a
client uses exactly the method it registered. Anything else is ``invalid_client``, with a
:class:`ClientAuthFailure` that says why for the log and the audit trail.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from joserfc import jws
from joserfc.errors import JoseError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..caching.clients import ClientCache
from ..security.digests import digests_equal, keyed_digest
from ..security.text import is_storable
from ..storage import Client, ClientAssertion
from .client_jwks import ClientJwks
from .errors import ClientAuthFailure, InvalidClient, InvalidRequest

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_MAX_LIFETIME = 3600
MAX_CREDENTIAL_LENGTH = 4096
MAX_CLIENT_ID = 64
_DUMMY_SECRET_HASH = "0" * 64
SECRET_METHODS = frozenset({"client_secret_basic", "client_secret_post"})


@dataclass(frozen=True)
class Credentials:
    """What the request presented, before anything is checked."""

    method: str
    client_id: str | None
    secret: str | None = None
    assertion: str | None = None


def read_credentials(authorization: str | None, form: Mapping[str, str]) -> Credentials:
    """Find the one authentication method the request uses; two at once is refused (§2.3)."""
    has_secret = "client_secret" in form
    has_assertion = "client_assertion" in form or "client_assertion_type" in form
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() == "basic":
        if has_secret or has_assertion:
            raise InvalidRequest("use one client authentication method, not several")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
            raw_id, raw_secret = decoded.split(":", 1)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidClient(
                "malformed Basic credentials", reason=ClientAuthFailure.MALFORMED, used_basic=True
            ) from None
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if "client_id" in form and form["client_id"] != client_id:
            raise InvalidClient(
                "client_id does not match the Basic credentials", reason=ClientAuthFailure.MALFORMED, used_basic=True
            )
        return Credentials("client_secret_basic", client_id, secret=secret)
    if has_secret and has_assertion:
        raise InvalidRequest("use one client authentication method, not several")
    if has_assertion:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise InvalidClient(
                f"client_assertion_type must be {ASSERTION_TYPE}", reason=ClientAuthFailure.BAD_ASSERTION
            )
        assertion = form.get("client_assertion", "")
        return Credentials("private_key_jwt", form.get("client_id"), assertion=assertion)
    if has_secret:
        return Credentials("client_secret_post", form.get("client_id"), secret=form["client_secret"])
    return Credentials("none", form.get("client_id"))


class ClientAuthenticator:
    """Checks credentials against the registered client; an assertion's audience is ``issuer``.

    An assertion is checked in short sessions of its own before the request's ``db`` is first
    used: no connection or transaction of the request is held while the client's JWKS is fetched,
    and its ``jti`` is spent in a transaction committed on its own, so that it stays spent
    whatever becomes of the request.
    """

    def __init__(self, secret_key: str, issuer: str, sessions: sessionmaker[Session], clients: ClientCache) -> None:
        self.secret_key = secret_key
        self.issuer = issuer
        self.sessions = sessions
        self.clients = clients
        self.jwks = ClientJwks(sessions)

    def authenticate(self, db: Session, credentials: Credentials) -> Client:
        """The client, or ``InvalidClient``."""
        used_basic = credentials.method == "client_secret_basic"
        if credentials.method == "private_key_jwt":
            return self._authenticate_assertion(db, credentials)
        client_id = credentials.client_id
        if not client_id or len(client_id) > MAX_CLIENT_ID:
            raise InvalidClient(
                "client_id is missing or unknown", reason=ClientAuthFailure.UNKNOWN_CLIENT, used_basic=used_basic
            )
        client = self.clients.get(db, client_id)
        if credentials.method == "none":
            if client is None:
                raise InvalidClient("this client must authenticate", reason=ClientAuthFailure.UNKNOWN_CLIENT)
            if client.token_endpoint_auth_method != "none":
                raise InvalidClient("this client must authenticate", reason=ClientAuthFailure.WRONG_METHOD)
            return client
        secret = credentials.secret or ""
        if len(secret) > MAX_CREDENTIAL_LENGTH:
            raise InvalidClient(reason=ClientAuthFailure.MALFORMED, used_basic=used_basic)
        presented = keyed_digest(self.secret_key, secret)
        stored = client.secret_hash if client is not None and client.secret_hash else _DUMMY_SECRET_HASH
        matches = digests_equal(presented, stored)
        if client is None:
            raise InvalidClient(reason=ClientAuthFailure.UNKNOWN_CLIENT, used_basic=used_basic)
        if not _accepts(client, credentials.method):
            raise InvalidClient(reason=ClientAuthFailure.WRONG_METHOD, used_basic=used_basic)
        if not matches:
            raise InvalidClient(reason=ClientAuthFailure.WRONG_SECRET, used_basic=used_basic)
        return client

    def _authenticate_assertion(self, db: Session, credentials: Credentials) -> Client:
        assertion = credentials.assertion or ""
        if not assertion or len(assertion) > MAX_CREDENTIAL_LENGTH:
            raise InvalidClient("client_assertion is missing or too long", reason=ClientAuthFailure.BAD_ASSERTION)
        try:
            unverified = jws.extract_compact(assertion.encode())
            issuer = json.loads(unverified.payload).get("iss")
        except (JoseError, ValueError, TypeError, AttributeError):
            raise InvalidClient("client_assertion is not a JWT", reason=ClientAuthFailure.BAD_ASSERTION) from None
        client_id = credentials.client_id or issuer
        if not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID or not is_storable(client_id):
            raise InvalidClient("client_assertion names no client", reason=ClientAuthFailure.BAD_ASSERTION)
        claims = self.jwks.verified_claims(client_id, assertion)
        self._check_assertion_claims(client_id, claims)
        try:
            with self.sessions.begin() as own:
                own.add(ClientAssertion(client_id=client_id, jti=claims["jti"], expires_at=claims["exp"]))
        except IntegrityError:
            raise InvalidClient(
                "this client_assertion was already used", reason=ClientAuthFailure.BAD_ASSERTION
            ) from None
        client = db.get(Client, client_id)
        if client is None:
            raise InvalidClient(reason=ClientAuthFailure.UNKNOWN_CLIENT)
        if client.token_endpoint_auth_method != "private_key_jwt":
            raise InvalidClient(reason=ClientAuthFailure.WRONG_METHOD)
        return client

    def _check_assertion_claims(self, client_id: str, claims: dict[str, Any]) -> None:
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise InvalidClient(
                "client_assertion iss and sub must be the client_id", reason=ClientAuthFailure.BAD_ASSERTION
            )
        # draft-ietf-oauth-rfc7523bis §4, RFC 7523 §3 item 3 case b: the aud claim "MUST use the
        # issuer identifier [RFC8414] of the authorization server as its sole value", and "the
        # token endpoint URL of the authorization server MUST NOT be used as an audience value".
        if claims.get("aud") != self.issuer:
            raise InvalidClient(
                f"client_assertion aud must be the issuer {self.issuer} alone, as a string",
                reason=ClientAuthFailure.BAD_ASSERTION,
            )
        exp = claims.get("exp")
        stamp = time.time()
        if not isinstance(exp, int) or exp <= stamp:
            raise InvalidClient("client_assertion has expired or has no exp", reason=ClientAuthFailure.BAD_ASSERTION)
        if exp - stamp > ASSERTION_MAX_LIFETIME:
            raise InvalidClient("client_assertion lives too long", reason=ClientAuthFailure.BAD_ASSERTION)
        iat = claims.get("iat")
        if iat is not None and (not isinstance(iat, int) or iat > stamp + 60):
            raise InvalidClient("client_assertion iat is in the future", reason=ClientAuthFailure.BAD_ASSERTION)
        nbf = claims.get("nbf")
        if nbf is not None and (not isinstance(nbf, int) or nbf > stamp + 60):
            raise InvalidClient("client_assertion is not valid yet (nbf)", reason=ClientAuthFailure.BAD_ASSERTION)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 255 or not is_storable(jti):
            raise InvalidClient("client_assertion needs a jti", reason=ClientAuthFailure.BAD_ASSERTION)


def _accepts(client: Client, method: str) -> bool:
    """Whether ``client`` may authenticate by ``method``: the one it named, or either way of
    sending a secret when it named none."""
    if client.token_endpoint_auth_method == method:
        return True
    return not client.auth_method_pinned and {client.token_endpoint_auth_method, method} <= SECRET_METHODS
