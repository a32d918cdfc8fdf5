"""Rate limits: per address on the hosted pages' forms, per account on sign-in, per client on the
endpoints where a client authenticates (a public one per client and address); counted in memory or
in Redis, falling back to memory while Redis is gone.

Every test runs apps of its own with small limits (the suite's shared app has them off). Their
browsers reach the app through a trusted proxy (the peer 127.0.0.1) that names a fresh client
address in ``X-Forwarded-For``, so tests never share a budget, even in a shared Redis.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from idp.accounts import links, password_policy, recovery
from idp.accounts.passwords import verify_password
from idp.app import create_app
from idp.endpoints.client_surface import CLIENT
from idp.endpoints.responses import json_response
from idp.security import rate_limits
from idp.settings import Settings, SettingsError
from idp.storage import AuditEvent, AuthorizationRequest, Client, User
from idp.web.pipeline import Call, Needs, endpoint

from .conftest import PASSWORD, TEST_ISSUER, make_settings
from .flows import RegisteredClient, authorize_params, exchange, hidden_fields, pkce_pair, sign_in
from .services import RedisServer, suite_redis_url

PROXY = "127.0.0.1"
HOUR = 3600
GENEROUS = "1000/hour"
LIMITS = (
    "IDP_RATE_LIMIT_REGISTRATION",
    "IDP_RATE_LIMIT_SIGN_IN",
    "IDP_RATE_LIMIT_SIGN_IN_ACCOUNT",
    "IDP_RATE_LIMIT_RESET",
    "IDP_RATE_LIMIT_VERIFICATION",
    "IDP_RATE_LIMIT_TOKEN",
    "IDP_RATE_LIMIT_AUTHORIZE",
    "IDP_RATE_LIMIT_REGISTRATION_ADDRESS",
    "IDP_RATE_LIMIT_VERIFICATION_ADDRESS",
    "IDP_RATE_LIMIT_EMAIL_CHANGE_ADDRESS",
)
_ALERT = re.compile(r'<[^>]*role="alert"[^>]*>(.*?)</', re.DOTALL)


def new_address() -> str:
    return str(ipaddress.IPv4Address("10.0.0.0") + secrets.randbits(24))


def new_email() -> str:
    return f"rl-{secrets.token_hex(5)}@example.com"


class Site:
    """An app of the test's own; ``browser()`` opens a client with its own cookies and address."""

    def __init__(self, app: Starlette, stack: ExitStack) -> None:
        self.app = app
        self.ctx = app.state.ctx
        self._stack = stack

    def browser(self, address: str | None = None, *, peer: str = PROXY, forwarded: str | None = None) -> TestClient:
        """``forwarded`` is the whole ``X-Forwarded-For``; by default it is just ``address``."""
        client = TestClient(
            self.app,
            base_url=TEST_ISSUER,
            follow_redirects=False,
            client=(peer, 50000),
            headers={"X-Forwarded-For": forwarded or address or new_address()},
        )
        return self._stack.enter_context(client)


@pytest.fixture
def open_site(base_environ: dict[str, str]) -> Iterator[Any]:
    """Start apps with every limit generous unless overridden, counted in memory unless
    ``IDP_REDIS_URL`` is given."""
    with ExitStack() as stack:

        def start(**overrides: str) -> Site:
            environ = {
                "IDP_RATE_LIMITING": "on",
                "IDP_REDIS_URL": "",
                "IDP_TRUSTED_PROXIES": PROXY,
                **dict.fromkeys(LIMITS, GENEROUS),
                **overrides,
            }
            app = create_app(make_settings(base_environ, **environ))
            stack.callback(app.state.ctx.close)
            return Site(app, stack)

        yield start


@pytest.fixture
def make_cc_client(make_client) -> Any:  # type: ignore[no-untyped-def]
    def make() -> RegisteredClient:
        return make_client(grant_types=["client_credentials"])

    return make


# --- steps and checks ---------------------------------------------------------------------------


def csrf(browser: TestClient) -> str:
    page = browser.get("/login")
    assert page.status_code == 200, page.text
    return hidden_fields(page.text)["csrf_token"]


def login(browser: TestClient, username: str, password: str = "not the password") -> httpx.Response:
    return browser.post("/login", data={"csrf_token": csrf(browser), "username": username, "password": password})


def post(browser: TestClient, path: str, **fields: str) -> httpx.Response:
    return browser.post(path, data={"csrf_token": csrf(browser), **fields})


def client_credentials(site: Site, client: RegisteredClient, secret: str | None = None) -> httpx.Response:
    browser = site.browser()
    return browser.post(
        "/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, secret or client.client_secret)
    )


def refusals(site: Site, **where: str) -> list[AuditEvent]:
    with site.ctx.db() as db:
        return list(db.scalars(select(AuditEvent).filter_by(event="rate_limited", **where).order_by(AuditEvent.id)))


def refused_count(limit: str) -> float:
    return REGISTRY.get_sample_value("idp_rate_limited_total", {"limit": limit}) or 0.0


def fallbacks() -> float:
    return REGISTRY.get_sample_value("idp_redis_fallbacks_total") or 0.0


def alert(response: httpx.Response) -> str:
    found = _ALERT.findall(response.text)
    assert len(found) == 1, response.text
    return found[0].strip()


def assert_refused_page(response: httpx.Response, window: int = HOUR) -> None:
    assert response.status_code == 429, response.text
    assert 0 < int(response.headers["retry-after"]) <= window
    assert alert(response).startswith("Too many attempts. Please try again in ")
    assert response.headers["cache-control"] == "no-store"


def assert_recorded(site: Site, address: str, limit: str) -> None:
    events = refusals(site, ip=address)
    assert [e.detail for e in events] == [{"limit": limit}]
    assert events[0].outcome == "failure"


# --- settings -----------------------------------------------------------------------------------


def test_defaults_are_the_issues():
    """Per client address loose enough for a carrier's address shared by many phones; per
    account, number and email address tight."""
    settings = Settings.from_environ({}, env_file="/nonexistent")
    assert (
        settings.rate_limit_registration,
        settings.rate_limit_sign_in,
        settings.rate_limit_sign_in_account,
        settings.rate_limit_reset,
        settings.rate_limit_verification,
        settings.rate_limit_token,
        settings.rate_limit_authorize,
    ) == ("60/hour", "300/hour", "10/hour", "60/hour", "300/hour", "600/minute", "120/minute")
    assert (
        settings.rate_limit_registration_address,
        settings.rate_limit_verification_address,
        settings.rate_limit_email_change_address,
    ) == ("3 per 2 minutes",) * 3


@pytest.mark.parametrize("name", LIMITS)
@pytest.mark.parametrize("value", ["lots", "0/hour", "5/fortnight", "5/hour;50/day", "100001/hour", "5/month"])
def test_a_bad_rate_stops_start_up_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=rf"^{name}: "):
        Settings.from_environ({name: value}, env_file="/nonexistent")


@pytest.mark.parametrize("value", ["3/minute", "40 per hour", "100/2 hours", "100000/day"])
def test_good_rates_are_taken(value):
    assert Settings.from_environ({"IDP_RATE_LIMIT_SIGN_IN": value}, env_file="/nonexistent").rate_limit_sign_in == value


def test_ipv6_addresses_are_grouped_by_a_64_by_default():
    assert Settings.from_environ({}, env_file="/nonexistent").rate_limit_ipv6_prefix == 64
    for value in ("32", "48", "128"):
        settings = Settings.from_environ({"IDP_RATE_LIMIT_IPV6_PREFIX": value}, env_file="/nonexistent")
        assert settings.rate_limit_ipv6_prefix == int(value)


@pytest.mark.parametrize("value", ["31", "129", "0", "-64", "64.5", "/64", "sixty-four"])
def test_a_bad_ipv6_prefix_stops_start_up_naming_the_variable(value):
    with pytest.raises(SettingsError, match=r"^IDP_RATE_LIMIT_IPV6_PREFIX: "):
        Settings.from_environ({"IDP_RATE_LIMIT_IPV6_PREFIX": value}, env_file="/nonexistent")


# --- hosted pages -------------------------------------------------------------------------------


def test_sign_in_is_limited_per_address(open_site, make_user):
    site = open_site(IDP_RATE_LIMIT_SIGN_IN="3/hour")
    user = make_user()
    address = new_address()
    browser = site.browser(address)
    before = refused_count("sign_in")
    for _ in range(3):
        assert login(browser, user.email).status_code == 400
    refused = login(browser, user.email, PASSWORD)  # even the right password waits
    assert_refused_page(refused)
    assert int(refused.headers["retry-after"]) > HOUR - 60
    assert_recorded(site, address, "sign_in")
    assert refused_count("sign_in") == before + 1
    assert "idp_session" not in refused.headers.get("set-cookie", "")
    # Another address has a budget of its own.
    assert login(site.browser(), user.email, PASSWORD).status_code == 303


def test_every_sign_in_step_counts_against_the_address(open_site, make_user):
    site = open_site(IDP_RATE_LIMIT_SIGN_IN="3/hour")
    address = new_address()
    browser = site.browser(address)
    assert login(browser, make_user().email).status_code == 400
    assert post(browser, "/login/code", identifier=new_email()).status_code == 303
    assert post(browser, "/login/verify", code="000000").status_code == 400
    assert_refused_page(post(browser, "/login/code", identifier=new_email()))
    assert_recorded(site, address, "sign_in")


def test_forms_without_a_valid_csrf_token_spend_no_budget(open_site, make_user):
    """A page on another site can make a visitor's browser post forms; they must not use up its budget."""
    site = open_site(IDP_RATE_LIMIT_SIGN_IN="1/hour", IDP_RATE_LIMIT_SIGN_IN_ACCOUNT="1/hour")
    browser, user = site.browser(), make_user()
    for _ in range(3):
        forged = browser.post("/login", data={"csrf_token": "forged", "username": user.email, "password": "x"})
        assert forged.status_code == 400
    assert login(browser, user.email, PASSWORD).status_code == 303


def test_sign_in_is_limited_per_account_across_addresses(open_site, make_user):
    site = open_site(IDP_RATE_LIMIT_SIGN_IN_ACCOUNT="2/hour")
    user, other = make_user(), make_user()
    assert login(site.browser(), user.email).status_code == 400
    assert login(site.browser(), user.email).status_code == 400
    address = new_address()
    refused = login(site.browser(address), f"  {user.email.upper()} ", PASSWORD)  # written differently, same account
    assert_refused_page(refused)
    assert_recorded(site, address, "sign_in_account")
    # The account's budget is its own: another account signs in from the same address.
    assert login(site.browser(address), other.email, PASSWORD).status_code == 303


def test_the_account_limit_answers_the_same_for_unknown_accounts(open_site, make_user):
    site = open_site(IDP_RATE_LIMIT_SIGN_IN_ACCOUNT="1/hour")
    known, unknown = make_user().email, f"nobody-{secrets.token_hex(4)}@example.com"
    answers = []
    for username in (known, unknown):
        first = login(site.browser(), username)
        second = login(site.browser(), username)
        answers.append((first.status_code, alert(first), second.status_code, re.sub(r"\d+", "N", alert(second))))
    assert answers[0] == answers[1]
    assert answers[0][2] == 429


def test_registration_is_limited_per_address(open_site):
    site = open_site(IDP_RATE_LIMIT_REGISTRATION="2/hour")
    address = new_address()
    browser = site.browser(address)

    def register() -> httpx.Response:
        email = f"reg-{secrets.token_hex(4)}@example.com"
        return post(browser, "/register", email=email, password=PASSWORD, password_confirm=PASSWORD)

    assert register().status_code == 200
    assert register().status_code == 200
    assert_refused_page(register())
    assert_recorded(site, address, "registration")
    assert site.browser().get("/register").status_code == 200  # the page itself is never limited


def test_password_reset_requests_are_limited_per_address(open_site, make_user):
    site = open_site(IDP_RATE_LIMIT_RESET="2/hour")
    address = new_address()
    browser = site.browser(address)
    user = make_user()
    for _ in range(2):
        assert post(browser, "/password/forgot", email=user.email).status_code == 200
    assert_refused_page(post(browser, "/password/forgot", email=user.email))
    assert_recorded(site, address, "reset")
    assert post(site.browser(), "/password/forgot", email=user.email).status_code == 200


def reset_token(site: Site, user_id: str, email: str) -> str:
    """A live reset link's token, as the emailed link carries it."""
    with site.ctx.db.begin() as db:
        return links.issue(db, recovery.PURPOSE, user_id, email, recovery.LINK_LIFETIME)


def test_new_passwords_on_a_reset_link_spend_the_sign_in_budget(open_site, make_user, monkeypatch):
    """Each refused new password costs argon2 checks against the history and leaves the link usable:
    the tries share the address's sign-in budget, and past it nothing is hashed or set."""
    site = open_site(IDP_RATE_LIMIT_SIGN_IN="3/hour")
    user = make_user()
    token = reset_token(site, user.id, user.email)
    address = new_address()
    browser = site.browser(address)

    def reset(password: str) -> httpx.Response:
        page = browser.get("/password/reset", params={"token": token})
        assert page.status_code == 200, page.text
        return browser.post(
            "/password/reset", data={**hidden_fields(page.text), "password": password, "password_confirm": password}
        )

    assert login(browser, user.email).status_code == 400
    assert reset(PASSWORD).status_code == 400  # a password of the history: refused after argon2 checks
    assert reset(PASSWORD).status_code == 400
    argon2: list[str] = []
    monkeypatch.setattr(password_policy, "hash_password", lambda password: argon2.append("hash") or "")
    monkeypatch.setattr(password_policy, "verify_password", lambda stored, password: argon2.append("verify") or False)
    refused = reset("a brand new passphrase 42")
    assert_refused_page(refused)
    assert_recorded(site, address, "sign_in")
    assert argon2 == []
    with site.ctx.db() as db:
        assert verify_password(db.get_one(User, user.id).password_hash, PASSWORD)
        assert recovery.find_reset_link(db, token) is not None
    assert login(browser, user.email, PASSWORD).status_code == 429


def signed_in_browser(site: Site, email: str, address: str) -> TestClient:
    browser = site.browser(address)
    assert login(browser, email, PASSWORD).status_code == 303
    return browser


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/login/code", {"identifier": new_email()}),
        ("/login/verify/resend", {}),
        ("/verify-email/resend", {"email": new_email()}),
        ("/account/phone", {"phone": "+15555550100", "current_password": PASSWORD}),
        ("/account/phone/verify", {"code": "000000"}),
        ("/account/phone/verify/resend", {}),
        ("/account/security/resend", {"enrolment": "x"}),
        ("/account/security/enable", {"method": "email", "current_password": PASSWORD}),
    ],
)
def test_code_requests_and_verification_are_limited_per_address(open_site, make_user, path, fields):
    site = open_site(IDP_RATE_LIMIT_VERIFICATION="2/hour")
    address = new_address()
    browser = signed_in_browser(site, make_user().email, address)
    assert post(browser, "/login/code", identifier=new_email()).status_code == 303  # a code is pending
    first = post(browser, path, **fields)
    assert first.status_code < 500 and refusals(site, ip=address) == [], first.text
    assert_refused_page(post(browser, path, **fields))
    assert_recorded(site, address, "verification")


def test_code_requests_share_one_budget(open_site):
    site = open_site(IDP_RATE_LIMIT_VERIFICATION="2/hour")
    address = new_address()
    browser = site.browser(address)
    assert post(browser, "/login/code", identifier=new_email()).status_code == 303
    assert post(browser, "/verify-email/resend", email=new_email()).status_code == 200
    assert_refused_page(post(browser, "/login/verify/resend"))
    assert_recorded(site, address, "verification")


# --- the authorization endpoint -----------------------------------------------------------------


def pending_requests(site: Site, client: RegisteredClient) -> int:
    with site.ctx.db() as db:
        return len(db.scalars(select(AuthorizationRequest.id).filter_by(client_id=client.client_id)).all())


def test_authorization_requests_that_wait_are_limited_per_address(open_site, make_client):
    """An unauthenticated GET /authorize keeps a request of up to a few KB for 30 minutes: past the
    limit, one address stores nothing more, and gets the 429 page instead of the sign-in page."""
    site = open_site(IDP_RATE_LIMIT_AUTHORIZE="3/minute")
    client = make_client()
    address = new_address()
    browser = site.browser(address)
    long_state = "s" * 2048
    before = refused_count("authorize")
    for _ in range(3):
        response = browser.get("/authorize", params=authorize_params(client, pkce_pair()[1], state=long_state))
        assert response.status_code == 303, response.text
        assert response.headers["location"].startswith("/login?")
    for _ in range(5):
        refused = site.browser(address).get("/authorize", params=authorize_params(client, pkce_pair()[1]))
        assert_refused_page(refused, window=60)
    assert pending_requests(site, client) == 3
    assert [e.detail for e in refusals(site, ip=address)] == [{"limit": "authorize"}] * 5
    assert refused_count("authorize") == before + 5
    elsewhere = site.browser().get("/authorize", params=authorize_params(client, pkce_pair()[1]))
    assert elsewhere.status_code == 303, elsewhere.text
    assert pending_requests(site, client) == 4


# --- endpoints where a client authenticates -----------------------------------------------------


def test_a_clients_requests_are_limited_per_client(open_site, make_cc_client):
    """A confidential client proves its secret, so its budget is its own wherever its requests
    come from (each of them from an address of its own here)."""
    site = open_site(IDP_RATE_LIMIT_TOKEN="2/minute")
    client, other = make_cc_client(), make_cc_client()
    before = refused_count("token")
    assert client_credentials(site, client).status_code == 200
    assert site.browser().post("/introspect", data={"token": "x"}, auth=client.auth).status_code == 200
    refused = client_credentials(site, client)
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "temporarily_unavailable",
        "error_description": "this client sent too many requests; retry after the time in Retry-After",
    }
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert refused.headers["cache-control"] == "no-store"
    revoked = site.browser().post("/revoke", data={"token": "x"}, auth=client.auth)
    assert (revoked.status_code, revoked.json()["error"]) == (429, "temporarily_unavailable")
    assert [e.detail for e in refusals(site, client_id=client.client_id)] == [{"limit": "token"}] * 2
    assert refused_count("token") == before + 2
    assert client_credentials(site, other).status_code == 200


def make_public_app(make_client: Any) -> RegisteredClient:
    """A first-party app with no secret: anyone can name it."""
    app: RegisteredClient = make_client(auth_method="none", first_party=True)
    return app


def spend_in_the_name_of(browser: TestClient, app: RegisteredClient) -> list[int]:
    """One request at each endpoint of a public app that spends its budget before anything is
    checked but its name: a token to revoke, an ``auth_session`` to answer, a code to exchange."""
    return [
        browser.post(path, data={"client_id": app.client_id, **fields}).status_code
        for path, fields in (
            ("/revoke", {"token": "x"}),
            ("/authorize-challenge", {"auth_session": "x", "otp": "000000"}),
            ("/token", {"grant_type": "authorization_code", "code": "x", "code_verifier": "x" * 43}),
        )
    ]


def test_a_stranger_spends_none_of_the_budget_of_a_public_apps_users(open_site, make_client, make_user):
    """A public app authenticates by naming its client_id, so a stranger can send requests in its
    name: they spend only the budget of their own address, and a person signing in with the app
    elsewhere still gets their tokens."""
    site = open_site(IDP_RATE_LIMIT_TOKEN="6/minute")
    app = make_public_app(make_client)
    stranger = site.browser()
    assert spend_in_the_name_of(stranger, app) == [200, 400, 400]
    assert spend_in_the_name_of(stranger, app) == [200, 400, 400]
    assert spend_in_the_name_of(stranger, app) == [429, 429, 429]
    person = site.browser()
    verifier, challenge = pkce_pair()
    callback = sign_in(person, app, make_user(), challenge)
    exchanged = exchange(person, app, callback["code"], verifier)
    assert exchanged.status_code == 200, exchanged.text
    refresh = {"grant_type": "refresh_token", "refresh_token": exchanged.json()["refresh_token"]}
    refreshed = person.post("/token", data={**refresh, "client_id": app.client_id})
    assert refreshed.status_code == 200, refreshed.text


def test_one_address_sending_requests_in_a_public_apps_name_is_limited(open_site, make_client, shared_redis):
    """A public app's budget is one per address: counted from the event loop (the introspection of
    what looks like an access token, answered from memory) and from a thread alike, under the
    app's id and the address in Redis. Another address of the app's is not refused."""
    site = open_site(IDP_RATE_LIMIT_TOKEN="3/minute", IDP_REDIS_URL=shared_redis)
    app = make_public_app(make_client)
    address = new_address()
    before = refused_count("token")
    named = {"client_id": app.client_id, "token": "a.b.c"}
    for _ in range(2):
        assert site.browser(address).post("/introspect", data=named).status_code == 401
    assert site.browser(address).post("/revoke", data=named).status_code == 200
    refused = site.browser(address).post("/revoke", data=named)
    assert (refused.status_code, refused.json()["error"]) == (429, "temporarily_unavailable")
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert [e.detail for e in refusals(site, client_id=app.client_id)] == [{"limit": "token"}]
    assert refused_count("token") == before + 1
    assert any(f"/token/{app.client_id}/{address}/".encode() in key for key in limit_keys(shared_redis))
    assert site.browser().post("/revoke", data=named).status_code == 200


def test_a_request_tried_from_memory_and_then_in_a_thread_counts_once(open_site, make_cc_client):
    """Introspection of a token not yet found unrevoked starts in the event loop, counts the
    client, then needs the database and runs again in a thread: the client is counted once."""
    site = open_site(IDP_RATE_LIMIT_TOKEN="3/minute")
    client = make_cc_client()
    token = client_credentials(site, client).json()["access_token"]
    for _ in range(2):
        found = site.browser().post("/introspect", data={"token": token}, auth=client.auth)
        assert (found.status_code, found.json()["active"]) == (200, True)
    assert client_credentials(site, client).status_code == 429


def test_with_redis_counts_from_the_event_loop_and_from_threads_share_one_budget(open_site, make_cc_client, tmp_path):
    """With Redis, a request served in the event loop counts its client there with an asyncio
    client and a request served in a thread with the blocking one: the same scripts on the same
    keys, so one budget, counted once per request whichever way it went."""
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        site = open_site(IDP_RATE_LIMIT_TOKEN="4/minute", IDP_REDIS_URL=redis_server.url)
        client = make_cc_client()
        token = client_credentials(site, client).json()["access_token"]
        for _ in range(2):
            found = site.browser().post("/introspect", data={"token": token}, auth=client.auth)
            assert (found.status_code, found.json()["active"]) == (200, True)
        assert site.browser().post("/revoke", data={"token": "unknown"}, auth=client.auth).status_code == 200
        refused = client_credentials(site, client)
        assert (refused.status_code, refused.json()["error"]) == (429, "temporarily_unavailable")
        assert [e.detail for e in refusals(site, client_id=client.client_id)] == [{"limit": "token"}]
        counted = redis.Redis.from_url(redis_server.url)
        try:
            assert counted.keys(f"{rate_limits.KEY_PREFIX}*"), "the counts are in Redis"
        finally:
            counted.close()
    finally:
        redis_server.kill()


def test_a_redis_reached_over_a_unix_socket_counts_from_the_event_loop_too(open_site, make_cc_client, tmp_path):
    """``IDP_REDIS_URL=unix://...`` is a Redis as any other, for the counts made without blocking."""
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        site = open_site(IDP_RATE_LIMIT_TOKEN="3/minute", IDP_REDIS_URL=redis_server.socket_url)
        client = make_cc_client()
        token = client_credentials(site, client).json()["access_token"]
        for _ in range(2):
            found = site.browser().post("/introspect", data={"token": token}, auth=client.auth)
            assert (found.status_code, found.json()["active"]) == (200, True)
        assert client_credentials(site, client).status_code == 429
    finally:
        redis_server.kill()


def test_a_per_address_limit_of_a_client_endpoint_is_answered_and_audited(open_site, make_cc_client):
    """A client endpoint may declare per-address limits as any other: its refusal is an RFC 6749
    error, and the audit event its answer writes is committed by the pipeline."""
    site = open_site(IDP_RATE_LIMIT_AUTHORIZE="1/minute")

    def probe(call: Call[Client]) -> Response:
        return json_response({"client": call.who.id})

    site.app.router.routes.append(
        Route(
            "/probe",
            endpoint(CLIENT, Needs(limits=(rate_limits.Limit.AUTHORIZE,), lock=False), probe),
            methods=["POST"],
        )
    )
    client = make_cc_client()
    address = new_address()
    assert site.browser(address).post("/probe", data={"x": "1"}, auth=client.auth).json() == {
        "client": client.client_id
    }
    refused = site.browser(address).post("/probe", data={"x": "1"}, auth=client.auth)
    assert (refused.status_code, refused.json()["error"]) == (429, "temporarily_unavailable")
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert refused.headers["cache-control"] == "no-store"
    assert [e.detail for e in refusals(site, client_id=client.client_id)] == [{"limit": "authorize"}]


def test_requests_that_fail_authentication_spend_no_clients_budget(open_site, make_cc_client):
    site = open_site(IDP_RATE_LIMIT_TOKEN="2/minute")
    client = make_cc_client()
    for _ in range(4):
        assert client_credentials(site, client, secret="a guess").status_code == 401
    assert client_credentials(site, client).status_code == 200
    assert client_credentials(site, client).status_code == 200


def test_rate_limiting_off_lets_everything_through(open_site, make_user, make_cc_client):
    site = open_site(IDP_RATE_LIMITING="off", **dict.fromkeys(LIMITS, "1/hour"))
    browser = site.browser()
    user, client = make_user(), make_cc_client()
    for _ in range(3):
        assert login(browser, user.email).status_code == 400
        assert post(browser, "/password/forgot", email=user.email).status_code == 200
        assert client_credentials(site, client).status_code == 200
    assert login(browser, user.email, PASSWORD).status_code == 303


# --- whose address ------------------------------------------------------------------------------


def test_forwarded_for_from_an_untrusted_peer_is_ignored(open_site, make_user):
    site = open_site(IDP_RATE_LIMIT_SIGN_IN="1/hour", IDP_TRUSTED_PROXIES="")
    peer = new_address()
    user = make_user()
    assert login(site.browser(peer=peer, forwarded=new_address()), user.email).status_code == 400
    assert_refused_page(login(site.browser(peer=peer, forwarded=new_address()), user.email, PASSWORD))
    assert_recorded(site, peer, "sign_in")


def test_forwarded_for_from_a_trusted_proxy_names_the_client(open_site, make_user):
    site = open_site(IDP_RATE_LIMIT_SIGN_IN="1/hour", IDP_TRUSTED_PROXIES=f"{PROXY} 192.0.2.0/24")
    address, user = new_address(), make_user()
    # The rightmost hop no trusted proxy added is the client; what it wrote to the left is not believed.
    assert login(site.browser(forwarded=f"198.51.100.7, {address}, 192.0.2.5"), user.email).status_code == 400
    refused = login(site.browser(forwarded=f"198.51.100.8, {address}"), user.email, PASSWORD)
    assert_refused_page(refused)
    assert_recorded(site, address, "sign_in")
    assert login(site.browser(forwarded=f"{address}, {new_address()}"), user.email, PASSWORD).status_code == 303


def new_ipv6_network(prefix: int = 64) -> ipaddress.IPv6Network:
    """A random network of documentation addresses (2001:db8::/32), so runs never share a budget."""
    base = ipaddress.IPv6Address("2001:db8::") + (secrets.randbits(prefix - 32) << (128 - prefix))
    return ipaddress.IPv6Network(f"{base}/{prefix}")


def in_network(network: ipaddress.IPv6Network) -> str:
    return str(network[secrets.randbits(128 - network.prefixlen)])


def test_ipv6_addresses_of_one_64_share_one_budget(open_site, make_user):
    """One host of an IPv6 network usually holds a whole /64: a budget per address would be one per guess."""
    site = open_site(IDP_RATE_LIMIT_SIGN_IN="2/hour")
    user, network = make_user(), new_ipv6_network()
    first, second, third = (in_network(network) for _ in range(3))
    assert login(site.browser(first), user.email).status_code == 400
    assert login(site.browser(second), user.email).status_code == 400
    refused = login(site.browser(third), user.email, PASSWORD)
    assert_refused_page(refused)
    assert_recorded(site, third, "sign_in")  # the audit log keeps the whole address
    # The next /64 has a budget of its own.
    neighbour = ipaddress.IPv6Address(int(network.network_address) + network.num_addresses)
    assert login(site.browser(str(neighbour)), user.email, PASSWORD).status_code == 303


def test_the_ipv6_prefix_is_a_setting(open_site, make_user):
    user = make_user()
    whole = open_site(IDP_RATE_LIMIT_SIGN_IN="1/hour", IDP_RATE_LIMIT_IPV6_PREFIX="128")
    network = new_ipv6_network()
    assert login(whole.browser(in_network(network)), user.email).status_code == 400
    assert login(whole.browser(in_network(network)), user.email, PASSWORD).status_code == 303
    wide = open_site(IDP_RATE_LIMIT_SIGN_IN="1/hour", IDP_RATE_LIMIT_IPV6_PREFIX="48")
    network = new_ipv6_network(48)
    assert login(wide.browser(in_network(network)), user.email).status_code == 400
    assert_refused_page(login(wide.browser(in_network(network)), user.email, PASSWORD))


def test_ipv4_addresses_keep_a_budget_each(open_site, make_user):
    site = open_site(IDP_RATE_LIMIT_SIGN_IN="1/hour")
    user = make_user()
    address = ipaddress.IPv4Address(new_address())
    assert login(site.browser(str(address)), user.email).status_code == 400
    assert login(site.browser(str(address + 1)), user.email, PASSWORD).status_code == 303
    assert_refused_page(login(site.browser(f"::ffff:{address}"), user.email, PASSWORD))  # the same IPv4 address


def test_ipv4_mapped_addresses_are_not_one_ipv6_network(open_site, make_user):
    """Every IPv4 address mapped into IPv6 lies in one /96: grouping them by prefix would make all of
    IPv4 one client."""
    site = open_site(IDP_RATE_LIMIT_SIGN_IN="1/hour")
    user = make_user()
    assert login(site.browser(f"::ffff:{new_address()}"), user.email).status_code == 400
    assert login(site.browser(f"::ffff:{new_address()}"), user.email, PASSWORD).status_code == 303


# --- Redis --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The CI Redis when there is one, else a ``redis-server`` of this module's own."""
    url = suite_redis_url()
    if url:
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.kill()


def limit_keys(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return list(client.scan_iter(f"{rate_limits.KEY_PREFIX}:*"))
    finally:
        client.close()


def test_redis_counts_are_shared_by_every_process(open_site, make_user, shared_redis):
    first = open_site(IDP_REDIS_URL=shared_redis, IDP_RATE_LIMIT_SIGN_IN="3/hour")
    second = open_site(IDP_REDIS_URL=shared_redis, IDP_RATE_LIMIT_SIGN_IN="3/hour")
    assert first.ctx is not second.ctx
    address, user = new_address(), make_user()
    assert login(first.browser(address), user.email).status_code == 400
    assert login(second.browser(address), user.email).status_code == 400
    assert login(first.browser(address), user.email).status_code == 400
    assert_refused_page(login(second.browser(address), user.email, PASSWORD))
    assert_refused_page(login(first.browser(address), user.email, PASSWORD))
    assert any(address.encode() in key for key in limit_keys(shared_redis))


def test_without_redis_limits_count_in_memory_and_come_back_to_redis(
    open_site, make_user, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(rate_limits, "REDIS_RETRY", 3.0)  # longer than the outage's four sign-ins take
    caplog.set_level(logging.INFO, logger="idp.rate_limits")
    server = RedisServer(tmp_path)
    server.start()
    try:
        site = open_site(IDP_REDIS_URL=server.url, IDP_RATE_LIMIT_SIGN_IN="3/hour")
        address, user = new_address(), make_user()
        assert login(site.browser(address), user.email).status_code == 400
        assert limit_keys(server.url)

        server.kill()
        before = fallbacks()
        assert login(site.browser(address), user.email, PASSWORD).status_code == 303  # sign-in keeps working
        # The limiter fell back during that sign-in, so it asks Redis again by this time + REDIS_RETRY
        # (from the kill instead, a slow first try at the dead Redis made the wait too short).
        fell_back = time.monotonic()
        assert fallbacks() == before + 1
        assert [r for r in caplog.records if r.levelno == logging.ERROR and "Redis is unreachable" in r.getMessage()]
        # Until Redis is asked again, it is not: memory counts, and its limit holds.
        assert login(site.browser(address), user.email).status_code == 400
        assert login(site.browser(address), user.email).status_code == 400
        assert_refused_page(login(site.browser(address), user.email))
        assert fallbacks() == before + 1

        server.start()
        time.sleep(max(0.0, fell_back + rate_limits.REDIS_RETRY + 0.1 - time.monotonic()))
        caplog.clear()
        assert login(site.browser(address), user.email).status_code == 400  # a fresh Redis: a fresh count
        assert limit_keys(server.url)
        assert [r for r in caplog.records if "Redis answers again" in r.getMessage()]
        assert login(site.browser(address), user.email).status_code == 400
        assert fallbacks() == before + 1
    finally:
        server.kill()


def test_an_outage_of_redis_is_logged_once_when_it_begins_and_once_when_it_ends(
    open_site, make_user, tmp_path, monkeypatch, caplog
):
    """Every fallback is counted, but only the outage's start and end are logged."""
    monkeypatch.setattr(rate_limits, "REDIS_RETRY", 0.0)  # every count asks Redis again
    caplog.set_level(logging.INFO, logger="idp.rate_limits")
    server = RedisServer(tmp_path)
    server.start()
    try:
        site = open_site(IDP_REDIS_URL=server.url)
        user = make_user()
        server.kill()
        before = fallbacks()
        for _ in range(3):
            assert login(site.browser(), user.email).status_code == 400
        assert fallbacks() >= before + 3
        server.start()
        for _ in range(2):
            assert login(site.browser(), user.email).status_code == 400
    finally:
        server.kill()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "idp.rate_limits"]
    assert lines == [
        (
            logging.ERROR,
            "rate limits: Redis is unreachable (ConnectionError); counting in this process, asking again every 0 s",
        ),
        (logging.INFO, "rate limits: Redis answers again; counting there"),
    ]
