"""Each process remembers the tokens whose signature it verified (``KeySnapshot.decode``): a token
presented again skips the RSA verification, and nothing else it is checked for."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from joserfc import jwt

from idp import keys
from idp.oauth.tokens import decode_signed, issue_access_token

from .flows import RegisteredClient, client_credentials_token, introspect


@pytest.fixture
def machine(make_client) -> RegisteredClient:  # type: ignore[no-untyped-def]
    return make_client(grant_types=["client_credentials"], redirect_uris=[], post_logout_redirect_uris=[])


@pytest.fixture
def verifications(monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """The tokens whose signature was checked with RSA, in order."""
    seen: list[str] = []
    decode = jwt.decode

    def counted(token: str, *args: Any, **kwargs: Any) -> jwt.Token:
        seen.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(keys.jwt, "decode", counted)
    return seen


def test_a_token_presented_again_is_not_verified_again(http, machine, verifications):
    token = client_credentials_token(http, machine)
    for _ in range(3):
        assert introspect(http, machine, token)["active"] is True
    assert verifications.count(token) == 1


def test_a_token_altered_after_it_was_verified_is_refused(http, machine):
    token = client_credentials_token(http, machine)
    assert introspect(http, machine, token)["active"] is True
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    assert introspect(http, machine, f"{header}.{payload}.{flipped}") == {"active": False}
    forged_payload = base64.urlsafe_b64encode(b'{"scope":"admin"}').rstrip(b"=").decode()
    assert introspect(http, machine, f"{header}.{forged_payload}.{signature}") == {"active": False}
    assert introspect(http, machine, token)["active"] is True


def test_a_kept_token_still_expires(http, ctx, machine):
    """What is kept is the signature's verdict; the expiry is checked at every presentation.
    Times are whole seconds: a token of 1 s issued late in a second may be expired at once, so it
    lives 2 s, at least one whole second."""
    issued = issue_access_token(
        ctx.keyring, issuer=ctx.settings.issuer, ttl=2, client_id=machine.client_id, subject=machine.client_id, scope=[]
    )
    assert introspect(http, machine, issued.token)["active"] is True
    exp = jwt.decode(issued.token, ctx.keyring.snapshot().keyset).claims["exp"]
    time.sleep(max(0.0, exp - time.time()) + 0.1)
    assert introspect(http, machine, issued.token) == {"active": False}


def test_what_a_caller_does_with_the_claims_does_not_change_the_kept_token(http, ctx, machine):
    token = client_credentials_token(http, machine)
    first = decode_signed(ctx.keyring, token)
    first.claims["sub"] = "someone-else"
    first.header["kid"] = "another"
    again = decode_signed(ctx.keyring, token)
    assert again.claims["sub"] == machine.client_id
    assert again.header["kid"] != "another"
