"""The keys a ``private_key_jwt`` client publishes at its ``jwks_uri``, and checking its assertions'
signatures against them.

The document is cached in the client's row. Anyone can send an assertion in a client's name, so a
fetch must cost the provider little whatever the assertion's fate:

- It happens outside every transaction of the request, in sessions of its own that hold no
  connection while it waits on the network, and what it brings is committed on its own, so that a
  failed authentication keeps it.
- It happens at most once every ``REFETCH_AFTER`` seconds per client, whatever its outcome: the
  time of the attempt is claimed first, by a conditional ``UPDATE`` committed on its own, which
  only one request of one process can win.
- At most ``MAX_CONCURRENT_FETCHES`` run at once in a process, each within ``FETCH_DEADLINE``
  seconds and ``MAX_DOCUMENT_BYTES``: a slow or hostile JWKS host holds a few threads for a few
  seconds, never the pool that serves every other client. A request that finds no free slot does
  not wait for one: it goes on with the cached keys.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, KeySetSerialization
from sqlalchemy import or_, update
from sqlalchemy.orm import Session, sessionmaker

from ..storage import Client, now, spend_once
from .errors import ClientAuthFailure, InvalidClient

log = logging.getLogger("idp.client_jwks")

ASSERTION_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
JWKS_CACHE_SECONDS = 300
REFETCH_AFTER = 30
MAX_CONCURRENT_FETCHES = 4
FETCH_TIMEOUT = 2.0
FETCH_DEADLINE = 3.0
MAX_DOCUMENT_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Cached:
    """What the client's row says of its keys, read in a session that is closed again."""

    jwks_uri: str
    jwks: dict[str, Any] | None
    fetched_at: int
    checked_at: int


class ClientJwks:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._fetch_slots = threading.BoundedSemaphore(MAX_CONCURRENT_FETCHES)

    def verified_claims(self, client_id: str, assertion: str) -> dict[str, Any]:
        """The assertion's claims if a key of the ``private_key_jwt`` client ``client_id`` signed it.

        The keys are fetched when none are cached or they are stale, or else once more when the
        assertion does not verify (the client may have rotated its key), as far as the interval
        allows; otherwise ``InvalidClient``.
        """
        cached = self._cached(client_id)
        keys = cached.jwks
        attempted = False
        if keys is None or now() - cached.fetched_at >= JWKS_CACHE_SECONDS:
            attempted = True
            keys = self._fetch(client_id, cached) or keys
        if keys is None:
            raise InvalidClient(
                "the client's JWKS could not be fetched; retry later", reason=ClientAuthFailure.JWKS_UNAVAILABLE
            )
        claims = _verified_claims(keys, assertion)
        if claims is None and not attempted:
            fetched = self._fetch(client_id, cached)
            claims = _verified_claims(fetched, assertion) if fetched is not None else None
        if claims is None:
            raise InvalidClient("client_assertion signature does not verify", reason=ClientAuthFailure.BAD_ASSERTION)
        return claims

    def _cached(self, client_id: str) -> _Cached:
        with self._sessions() as db:
            client = db.get(Client, client_id)
            if client is None:
                raise InvalidClient(reason=ClientAuthFailure.UNKNOWN_CLIENT)
            if client.token_endpoint_auth_method != "private_key_jwt" or not client.jwks_uri:
                raise InvalidClient(reason=ClientAuthFailure.WRONG_METHOD)
            return _Cached(client.jwks_uri, client.jwks, client.jwks_fetched_at or 0, client.jwks_checked_at or 0)

    def _fetch(self, client_id: str, cached: _Cached) -> dict[str, Any] | None:
        """The client's JWKS fetched now, if the interval, a free slot and the claim allow it."""
        stamp = now()
        if stamp - cached.checked_at < REFETCH_AFTER:
            return None
        if not self._fetch_slots.acquire(blocking=False):
            log.warning("client %s: JWKS not fetched, %d fetches already under way", client_id, MAX_CONCURRENT_FETCHES)
            return None
        try:
            if not self._claim(client_id, stamp):
                return None
            document = _download(client_id, cached.jwks_uri)
            if document is not None:
                self._store(client_id, document, stamp)
            return document
        finally:
            self._fetch_slots.release()

    def _claim(self, client_id: str, stamp: int) -> bool:
        """Whether this request won the client's fetch of this interval; the mark is committed."""
        due = or_(Client.jwks_checked_at.is_(None), Client.jwks_checked_at <= stamp - REFETCH_AFTER)
        with self._sessions.begin() as db:
            return spend_once(db, Client, Client.id == client_id, due, jwks_checked_at=stamp)

    def _store(self, client_id: str, document: dict[str, Any], stamp: int) -> None:
        with self._sessions.begin() as db:
            db.execute(
                update(Client).where(Client.id == client_id).values(jwks=document, jwks_fetched_at=stamp),
                execution_options={"synchronize_session": False},
            )


def _download(client_id: str, uri: str) -> dict[str, Any] | None:
    """The JWKS at ``uri`` if it answers a usable one in time; None, logged, otherwise."""
    import httpx  # here: a process imports it (some 3 MB) only if a client of its needs this

    deadline = time.monotonic() + FETCH_DEADLINE
    body = bytearray()
    try:
        with httpx.stream("GET", uri, timeout=FETCH_TIMEOUT, follow_redirects=False) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES or time.monotonic() > deadline:
                    log.warning(
                        "client %s: JWKS larger than %d bytes or slower than %g s",
                        client_id,
                        MAX_DOCUMENT_BYTES,
                        FETCH_DEADLINE,
                    )
                    return None
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        KeySet.import_key_set(cast(KeySetSerialization, document))
    except (httpx.HTTPError, ValueError, JoseError, TypeError, KeyError, AttributeError) as exc:
        log.warning("client %s: JWKS could not be fetched: %s", client_id, type(exc).__name__)
        return None
    return document


def _verified_claims(jwks: dict[str, Any], assertion: str) -> dict[str, Any] | None:
    """The claims if one of the client's keys signed the assertion.

    An assertion without ``kid`` (Authlib's ``PrivateKeyJWT`` sends none) is tried against each
    key, so that a client publishing two keys while it rotates keeps working.
    """
    try:
        keyset = KeySet.import_key_set(cast(KeySetSerialization, jwks))
        header = jws.extract_compact(assertion.encode()).headers()
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    candidates: list[KeySet | object] = [keyset] if header.get("kid") else list(keyset.keys)
    for key in candidates:
        try:
            return jwt.decode(assertion, key, algorithms=ASSERTION_ALGORITHMS).claims  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError):
            continue
    return None
