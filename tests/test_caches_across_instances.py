"""What every process keeps in memory stops counting the moment it changes anywhere.

Three ``idp serve`` processes share one store, as replicas behind a load balancer do: PostgreSQL
with Redis (the counters read from Redis), PostgreSQL alone (read from the database) and one SQLite
file (read from the file beside it). Each test first makes every process use, and so keep, what it
then changes through one process or the command line, and asks every process again at once: a
revoked token, a deleted client, a rotated secret, a changed registration, a changed profile or a
disabled person must count everywhere on the very next request, with no wait in between.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from idp.caching.generations import SETTLE_SECONDS

from .conftest import free_port, idp_json, run_idp
from .flows import RegisteredClient, eventually, exchange, pkce_pair, sign_in
from .instances import STORES, Instances, running, store
from .services import RedisServer

REDIRECT_URI = "https://rp.example/cb"
TIMES_KEPT = 3
"""How often each process is asked before the change: enough for any of them to have kept it."""


@pytest.fixture(scope="module", params=STORES)
def instances(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instances]:
    directory = tmp_path_factory.mktemp("caches")
    with ExitStack() as stack:
        environ = store(request.param, directory, stack) | {"IDP_RATE_LIMITING": "off"}
        yield stack.enter_context(running(environ, directory))


def machine_client(instances: Instances, *options: str) -> RegisteredClient:
    """A confidential client of every grant the tests use, made with the command line (and its ``options``)."""
    made = instances.idp(
        "clients", "create", "--name", "Machine", "--redirect-uri", REDIRECT_URI,
        "--grant-type", "client_credentials", "--grant-type", "authorization_code",
        "--grant-type", "refresh_token", *options,
    )  # fmt: skip
    return RegisteredClient(made["client_id"], made["client_secret"], REDIRECT_URI)


def everywhere(instances: Instances, ask: Callable[[httpx.Client], Any]) -> list[Any]:
    """``ask(web)`` of every process, :data:`TIMES_KEPT` times each; the answers of the last round."""
    answers: list[Any] = []
    for _ in range(TIMES_KEPT):
        answers = [ask(web) for web in instances.webs]
    return answers


def client_credentials(web: httpx.Client, auth: tuple[str, str]) -> httpx.Response:
    return web.post("/token", data={"grant_type": "client_credentials"}, auth=auth)


def introspected(web: httpx.Client, client: RegisteredClient, token: str) -> dict[str, Any]:
    response = web.post("/introspect", data={"token": token}, auth=client.auth)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_revoked_access_token_is_inactive_at_once_on_every_instance(instances):
    client = machine_client(instances)
    token = client_credentials(instances.webs[0], client.auth).json()["access_token"]
    assert all(found["active"] for found in everywhere(instances, lambda web: introspected(web, client, token)))

    revoked = instances.webs[1].post("/revoke", data={"token": token}, auth=client.auth)
    assert revoked.status_code == 200

    assert everywhere(instances, lambda web: introspected(web, client, token)) == [{"active": False}] * 3


def test_a_grant_revoked_on_one_instance_ends_its_access_token_at_once_on_every_instance(instances):
    client = machine_client(instances)
    verifier, challenge = pkce_pair()
    web = instances.webs[0]
    callback = sign_in(web, client, instances.person(), challenge, scope="openid offline_access")
    tokens = exchange(web, client, callback["code"], verifier).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert [r.status_code for r in everywhere(instances, lambda web: web.get("/userinfo", headers=bearer))] == [200] * 3

    revoked = instances.webs[2].post("/revoke", data={"token": tokens["refresh_token"]}, auth=client.auth)
    assert revoked.status_code == 200

    assert [r.status_code for r in everywhere(instances, lambda web: web.get("/userinfo", headers=bearer))] == [401] * 3
    found = everywhere(instances, lambda web: introspected(web, client, tokens["access_token"]))
    assert found == [{"active": False}] * 3


def test_a_rotated_secret_stops_at_once_on_every_instance(instances):
    client = machine_client(instances)
    assert [r.status_code for r in everywhere(instances, lambda web: client_credentials(web, client.auth))] == [200] * 3

    new_secret = instances.idp("clients", "rotate-secret", client.client_id)["client_secret"]

    old = everywhere(instances, lambda web: client_credentials(web, client.auth))
    assert [(r.status_code, r.json()["error"]) for r in old] == [(401, "invalid_client")] * 3
    new = everywhere(instances, lambda web: client_credentials(web, (client.client_id, new_secret)))
    assert [r.status_code for r in new] == [200] * 3


def test_a_deleted_client_stops_at_once_on_every_instance(instances):
    client = machine_client(instances)
    token = client_credentials(instances.webs[0], client.auth).json()["access_token"]
    assert [r.status_code for r in everywhere(instances, lambda web: client_credentials(web, client.auth))] == [200] * 3
    assert all(found["active"] for found in everywhere(instances, lambda web: introspected(web, client, token)))

    run = run_idp(instances.environ, "clients", "delete", client.client_id)
    assert run.returncode == 0, run.stderr

    after = everywhere(instances, lambda web: client_credentials(web, client.auth))
    assert [(r.status_code, r.json()["error"]) for r in after] == [(401, "invalid_client")] * 3
    other = machine_client(instances)
    assert everywhere(instances, lambda web: introspected(web, other, token)) == [{"active": False}] * 3


def test_a_changed_registration_counts_at_once_on_every_instance(instances):
    client = machine_client(instances)
    assert [r.status_code for r in everywhere(instances, lambda web: client_credentials(web, client.auth))] == [200] * 3

    instances.idp("clients", "update", client.client_id, "--grant-type", "authorization_code")

    after = everywhere(instances, lambda web: client_credentials(web, client.auth))
    assert [(r.status_code, r.json()["error"]) for r in after] == [(400, "unauthorized_client")] * 3


def _signed_in_person(instances: Instances, scope: str) -> tuple[str, dict[str, str]]:
    """A new person signed in to a new client through the first process: their id, and a bearer header."""
    client = machine_client(instances, "--scope", scope)
    person = instances.person("--name", "Before")
    verifier, challenge = pkce_pair()
    with instances.web(0) as browser:
        callback = sign_in(browser, client, person, challenge, scope=scope)
        tokens = exchange(browser, client, callback["code"], verifier).json()
    return person.id, {"Authorization": f"Bearer {tokens['access_token']}"}


def test_a_changed_profile_shows_at_once_on_every_instance(instances):
    person, bearer = _signed_in_person(instances, "openid profile")
    before = everywhere(instances, lambda web: web.get("/userinfo", headers=bearer).json())
    assert [found["name"] for found in before] == ["Before"] * 3

    instances.idp("users", "update", person, "--name", "After")

    after = everywhere(instances, lambda web: web.get("/userinfo", headers=bearer).json())
    assert [found["name"] for found in after] == ["After"] * 3


def test_a_group_joined_shows_at_once_on_every_instance(instances):
    person, bearer = _signed_in_person(instances, "openid groups")
    before = everywhere(instances, lambda web: web.get("/userinfo", headers=bearer).json())
    assert before == [{"sub": person, "groups": []}] * 3

    instances.idp("users", "update", person, "--group", "staff")

    after = everywhere(instances, lambda web: web.get("/userinfo", headers=bearer).json())
    assert after == [{"sub": person, "groups": ["staff"]}] * 3


def test_a_disabled_person_is_refused_at_once_on_every_instance(instances):
    person, bearer = _signed_in_person(instances, "openid profile")
    assert [r.status_code for r in everywhere(instances, lambda web: web.get("/userinfo", headers=bearer))] == [200] * 3

    run = run_idp(instances.environ, "users", "disable", person)
    assert run.returncode == 0, run.stderr

    assert [r.status_code for r in everywhere(instances, lambda web: web.get("/userinfo", headers=bearer))] == [401] * 3


def test_a_change_whose_counter_never_reached_redis_still_counts_within_seconds(instances):
    """The command that rotates the secret cannot reach Redis (here its own settings name a port
    nobody listens on), so the processes are not told through it; they still read the counters
    from the database every few seconds, so the old secret stops there too, shortly."""
    if "IDP_REDIS_URL" not in instances.environ:
        pytest.skip("without Redis the counters are read from the database or the file itself")
    client = machine_client(instances)
    assert [r.status_code for r in everywhere(instances, lambda web: client_credentials(web, client.auth))] == [200] * 3

    unreachable = instances.environ | {"IDP_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    idp_json(unreachable, "clients", "rotate-secret", client.client_id)

    def refused_everywhere() -> bool:
        return [r.status_code for r in (client_credentials(web, client.auth) for web in instances.webs)] == [401] * 3

    assert eventually(refused_everywhere, seconds=3 * SETTLE_SECONDS)


def test_while_redis_is_down_and_after_it_restarts_empty_nothing_stale_is_used(tmp_path):
    """Without Redis a process cannot know what changed: it uses no cache until Redis answers,
    and a Redis back with none of its counters (it keeps nothing on disk) starts them afresh."""
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    environ = {
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}",
        "IDP_REDIS_URL": redis_server.url,
        "IDP_RATE_LIMITING": "off",
    }
    try:
        with running(environ, tmp_path, count=2) as found:
            client = machine_client(found)
            assert [r.status_code for r in everywhere(found, lambda web: client_credentials(web, client.auth))] == [
                200
            ] * 2

            redis_server.kill()
            assert [r.status_code for r in everywhere(found, lambda web: client_credentials(web, client.auth))] == [
                200
            ] * 2
            secret = found.idp("clients", "rotate-secret", client.client_id)["client_secret"]
            old = everywhere(found, lambda web: client_credentials(web, client.auth))
            assert [r.status_code for r in old] == [401] * 2

            redis_server.start()
            old = everywhere(found, lambda web: client_credentials(web, client.auth))
            assert [r.status_code for r in old] == [401] * 2
            new = everywhere(found, lambda web: client_credentials(web, (client.client_id, secret)))
            assert [r.status_code for r in new] == [200] * 2
    finally:
        redis_server.kill()
