"""Token lifetimes of a client's own, within the server's: an access token as short as an app
wants it, refresh tokens that slide with use, and an absolute maximum for a refreshed sign-in."""

from __future__ import annotations

import time

import jwt
from sqlalchemy import update

from idp.storage import Grant

from .conftest import run_idp
from .flows import tokens_for
from .test_cli import create_client, env  # noqa: F401 - env is a fixture

OFFLINE = "openid offline_access"


def verified_claims(http, token: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """The access token's claims, its signature checked against the published JWKS."""
    keys = jwt.PyJWKSet.from_dict(http.get("/jwks.json").json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    return jwt.decode(token, key=key, algorithms=["RS256"], audience="http://testserver")


def introspected(http, client, token: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return http.post("/introspect", data={"token": token}, auth=client.auth).json()


def test_an_access_token_lives_as_long_as_its_client_says(http, settings, make_client, make_user):
    short = make_client(lifetimes={"access_token_ttl": 120})
    tokens = tokens_for(http, short, make_user())
    claims = verified_claims(http, tokens["access_token"])
    assert tokens["expires_in"] == 120 and claims["exp"] - claims["iat"] == 120
    plain = tokens_for(http, make_client(), make_user())
    assert plain["expires_in"] == settings.access_token_ttl


def test_a_client_never_gets_longer_than_the_server_allows(http, settings, make_client, make_user):
    """A key stays published only as long as the server's lifetime: a longer token could outlive it."""
    greedy = make_client(lifetimes={"access_token_ttl": settings.access_token_ttl * 4})
    tokens = tokens_for(http, greedy, make_user())
    assert tokens["expires_in"] == settings.access_token_ttl


def test_refresh_tokens_slide_with_the_clients_lifetime(http, make_client, make_user):
    app = make_client(lifetimes={"refresh_token_ttl": 600})
    tokens = tokens_for(http, app, make_user(), scope=OFFLINE)
    first = introspected(http, app, tokens["refresh_token"])
    assert first["exp"] - first["iat"] == 600
    refreshed = http.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=app.auth
    ).json()
    second = introspected(http, app, refreshed["refresh_token"])
    assert second["exp"] - second["iat"] == 600 and second["exp"] >= first["exp"]


def test_no_refresh_token_outlives_the_absolute_maximum(http, ctx, make_client, make_user):
    app = make_client(lifetimes={"refresh_token_absolute_ttl": 3600})
    tokens = tokens_for(http, app, make_user(), scope=OFFLINE)
    began = int(time.time()) - 3590
    with ctx.db.begin() as db:
        db.execute(update(Grant).where(Grant.client_id == app.client_id).values(created_at=began))
    refreshed = http.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=app.auth
    )
    assert refreshed.status_code == 200, refreshed.text
    assert introspected(http, app, refreshed.json()["refresh_token"])["exp"] == began + 3600


def test_the_command_line_sets_and_shows_a_clients_lifetimes(env):  # noqa: F811
    create_client(
        env, "--access-token-ttl", "300", "--refresh-token-ttl", "86400", "--refresh-token-absolute-ttl", "604800"
    )
    listed = run_idp(env, "clients", "list")
    assert '"access_token_ttl": 300' in listed.stdout
    assert '"refresh_token_ttl": 86400' in listed.stdout and '"refresh_token_absolute_ttl": 604800' in listed.stdout
    for option, value in [("--access-token-ttl", "30"), ("--refresh-token-ttl", "0"), ("--access-token-ttl", "x")]:
        refused = run_idp(
            env, "clients", "create", "--name", "A", "--redirect-uri", "https://a.example/cb", option, value
        )
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert option in refused.stderr
    assert run_idp(env, "clients", "list").stdout.count("client_id") == 1, "nothing written for a refusal"
