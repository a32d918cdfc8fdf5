"""A NUL character anywhere a request carries text is a clear 400: PostgreSQL cannot store or even
compare text holding one, and without this check the driver's error surfaced as a 503."""

from __future__ import annotations

import pytest

from .flows import RegisteredClient


@pytest.mark.parametrize(
    "path",
    [
        "/login?request=abc%00def",
        "/authorize?client_id=a%00b&response_type=code&redirect_uri=https://rp.example/cb",
        "/password/reset?token=abc%00",
        "/verify-email?token=%00",
        "/account/email/confirm?token=ab%00",
    ],
)
def test_a_nul_in_the_path_or_query_is_a_400(http, path):
    response = http.get(path)
    assert response.status_code == 400, (response.status_code, response.text[:300])


def test_a_nul_in_a_sign_in_form_is_a_400(http):
    page = http.get("/login")
    assert page.status_code == 200
    response = http.post("/login", data={"username": "a\x00b@example.com", "password": "x" * 12})
    assert response.status_code == 400, (response.status_code, response.text[:300])


def test_a_nul_at_the_token_endpoint_is_an_oauth_invalid_request(http, make_client):
    client: RegisteredClient = make_client(grant_types=["client_credentials"], scope="profile")
    form = {"grant_type": "client_credentials", "client_id": "a\x00b", "client_secret": "x"}
    response = http.post("/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    response = http.post("/token", data={"grant_type": "client_credentials", "scope": "pro\x00file"}, auth=client.auth)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_a_nul_in_a_path_parameter_is_a_400(http):
    response = http.post("/account/sessions/abc%00/end")
    assert response.status_code == 400, (response.status_code, response.text[:300])
