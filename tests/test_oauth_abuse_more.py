"""More of an attacker's requests to the protocol endpoints: redirect targets a confidential
client never registered, assertion audiences, and unauthenticated requests that store state."""

from __future__ import annotations

from dataclasses import replace

import httpx

from .flows import authorize_params, pkce_pair, sign_in


def assert_error_page(response: httpx.Response) -> None:
    """A bad redirect target: an HTML page, never a redirect (RFC 6749 §4.1.2.1)."""
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")


# --- any loopback port is for native apps only (RFC 8252 §7.3) -----------------------------------


def test_a_confidential_client_gets_no_other_loopback_port(http, make_client):
    """RFC 8252 §7.3 lets a native app's loopback redirect take any port; a confidential web
    client on 127.0.0.1:5000 must not have its code sent to whatever listens on port 5001."""
    client = make_client(redirect_uris=["http://127.0.0.1:5000/cb"])
    other_port = replace(client, redirect_uri="http://127.0.0.1:5001/cb")
    assert_error_page(http.get("/authorize", params=authorize_params(other_port, pkce_pair()[1])))


def test_a_public_client_still_gets_any_loopback_port(http, make_client, make_user):
    client = make_client(redirect_uris=["http://127.0.0.1:5000/cb"], auth_method="none")
    other_port = replace(client, redirect_uri="http://127.0.0.1:5001/cb")
    callback = sign_in(http, other_port, make_user(), pkce_pair()[1], state="st")
    assert callback["state"] == "st"
