"""Three ``idp serve`` processes behind one issuer, sharing one PostgreSQL and one Redis.

They stand for the replicas behind a load balancer: every piece of shared state must live in the
database, in Redis or in the keys directory, so that any request may land on any instance.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from http.cookiejar import CookieJar
from typing import Any

import httpx
import pytest

from .flows import RegisteredClient, authorize_params, exchange, hidden_fields, pkce_pair, query_of, sign_in
from .instances import ISSUER, Instances, running, store

REDIRECT_URI = "https://rp.example/cb"
RESET_LIMIT = 2


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instances]:
    directory = tmp_path_factory.mktemp("instances")
    with ExitStack() as stack:
        environ = store("postgresql+redis", directory, stack) | {"IDP_RATE_LIMIT_RESET": f"{RESET_LIMIT}/hour"}
        yield stack.enter_context(running(environ, directory))


@pytest.fixture(scope="module")
def client(instances: Instances) -> RegisteredClient:
    made = instances.idp("clients", "create", "--name", "Relying app", "--redirect-uri", REDIRECT_URI)
    return RegisteredClient(made["client_id"], made["client_secret"], REDIRECT_URI)


def refresh(web: httpx.Client, client: RegisteredClient, token: str) -> httpx.Response:
    return web.post("/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=client.auth)


def introspect(web: httpx.Client, client: RegisteredClient, token: str) -> dict[str, Any]:
    response = web.post("/introspect", data={"token": token}, auth=client.auth)
    assert response.status_code == 200, response.text
    return response.json()


def signed_in_on(instances: Instances, index: int, client: RegisteredClient) -> dict[str, Any]:
    """A full sign-in on one instance and the code exchanged there: the token response."""
    verifier, challenge = pkce_pair()
    with instances.web(index) as web:
        callback = sign_in(web, client, instances.person(), challenge)
        response = exchange(web, client, callback["code"], verifier)
    assert response.status_code == 200, response.text
    return response.json()


def header_kid(token: str) -> str:
    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


def test_every_instance_serves_the_one_issuer(instances):
    for url in instances.urls:
        assert httpx.get(url + "/readyz").json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
        assert httpx.get(url + "/.well-known/openid-configuration").json()["issuer"] == ISSUER


def test_signed_in_on_one_refreshed_on_the_second_revoked_on_the_third(instances, client):
    jar = CookieJar()
    verifier, challenge = pkce_pair()
    with instances.web(0, jar) as first, instances.web(1, jar) as second, instances.web(2, jar) as third:
        callback = sign_in(first, client, instances.person(), challenge)

        exchanged = exchange(second, client, callback["code"], verifier)
        assert exchanged.status_code == 200, exchanged.text
        refreshed = refresh(second, client, exchanged.json()["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        tokens = refreshed.json()
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert third.get("/userinfo", headers=bearer).status_code == 200
        assert introspect(first, client, tokens["refresh_token"])["active"] is True

        assert third.post("/revoke", data={"token": tokens["refresh_token"]}, auth=client.auth).status_code == 200

        assert introspect(first, client, tokens["refresh_token"]) == {"active": False}
        assert introspect(second, client, tokens["access_token"]) == {"active": False}
        assert refresh(first, client, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_the_sign_in_cookie_of_one_instance_is_honoured_by_another(instances, client):
    jar = CookieJar()
    with instances.web(0, jar) as first, instances.web(1, jar) as second:
        sign_in(first, client, instances.person(), pkce_pair()[1])
        verifier, challenge = pkce_pair()
        response = second.get("/authorize", params=authorize_params(client, challenge, prompt="none"))
        assert response.status_code == 303, response.text
        callback = query_of(response.headers["location"])
        assert "code" in callback, callback
        assert exchange(second, client, callback["code"], verifier).status_code == 200


def test_a_rotated_away_refresh_token_at_another_instance_revokes_the_family(instances, client):
    tokens = signed_in_on(instances, 0, client)
    with instances.web(1) as second, instances.web(2) as third, instances.web(0) as first:
        rotated = refresh(second, client, tokens["refresh_token"])
        assert rotated.status_code == 200, rotated.text
        newest = rotated.json()["refresh_token"]

        replayed = refresh(third, client, tokens["refresh_token"])
        assert replayed.status_code == 400
        assert replayed.json()["error"] == "invalid_grant"

        assert introspect(first, client, newest) == {"active": False}
        assert refresh(first, client, newest).json()["error"] == "invalid_grant"


@pytest.mark.parametrize("attempt", range(3))
def test_one_refresh_token_at_two_instances_at_once_succeeds_exactly_once(instances, client, attempt):
    token = signed_in_on(instances, 2, client)["refresh_token"]
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def present(index: int) -> None:
        with instances.web(index) as web:
            web.get("/healthz")  # connect first, so that both requests leave together
            barrier.wait(timeout=10)
            response = refresh(web, client, token)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=present, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200, 400]


def test_a_key_rotated_with_the_cli_is_used_and_published_by_every_instance(instances):
    made = instances.idp(
        "clients", "create", "--name", "API", "--grant-type", "client_credentials", "--scope", "api.read"
    )
    service = (made["client_id"], made["client_secret"])
    old_kids = {key["kid"] for key in httpx.get(instances.urls[0] + "/jwks.json").json()["keys"]}

    new_kid = instances.idp("keys", "rotate")["kid"]
    rotated_at = time.monotonic()
    pending = set(range(3))
    while pending and time.monotonic() - rotated_at < 5:
        for index in sorted(pending):
            url = instances.urls[index]
            published = {key["kid"] for key in httpx.get(url + "/jwks.json").json()["keys"]}
            response = httpx.post(url + "/token", data={"grant_type": "client_credentials"}, auth=service)
            assert response.status_code == 200, response.text
            if new_kid in published and header_kid(response.json()["access_token"]) == new_kid:
                assert old_kids <= published, "a rotated-away key must stay published"
                pending.discard(index)
        time.sleep(0.2)
    assert not pending, f"instances {sorted(pending)} still sign with the old key 5 s after the rotation"


def test_rate_limits_count_across_instances(instances):
    statuses = []
    for index in range(RESET_LIMIT + 1):
        with instances.web(index) as web:
            page = web.get("/password/forgot")
            assert page.status_code == 200, page.text
            data = {**hidden_fields(page.text), "email": f"nobody-{index}@example.com"}
            response = web.post("/password/forgot", data=data)
            statuses.append(response.status_code)
    assert statuses == [200] * RESET_LIMIT + [429], statuses
    assert int(response.headers["retry-after"]) > 0
