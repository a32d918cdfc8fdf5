"""OAuth 2.0 for First-Party Applications: a native app signs a person in without a browser at the
authorization challenge endpoint (draft-ietf-oauth-first-party-apps-04), and exchanges the code at
/token with its verifier and no redirect_uri.

The apps here run on this module's own database, so that the codes they queue are read from the
"idp.messages" log (email) or from the Twilio stub (SMS) of tests/test_passwordless.py; one journey
runs against a real ``idp serve`` with httpx, Authlib and PyJWT's ``PyJWKClient``, as a phone app
and its back end would.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp.accounts import totp
from idp.accounts.users import create_user
from idp.context import Context
from idp.oauth.clients import create_client
from idp.storage import AuditEvent, BrowserSession, OneTimeCode, PendingSignIn, User

from .conftest import TEST_ISSUER, make_settings, passwords_hashed_once, start_server
from .flows import RegisteredClient, ctx_of, emailed_code, messages_to, pkce_pair
from .services import running_app
from .test_passwordless import Stub, stub, texted_code, twilio_settings  # noqa: F401 - stub is a fixture
from .test_rate_limits import new_address

PATH = "/authorize-challenge"
PASSWORD = "a long and right passphrase"
SCOPE = "openid profile email phone offline_access"


@pytest.fixture(autouse=True)
def _messages_logged(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="idp.messages")
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture
def site(module_environ: dict[str, str], stub: Stub) -> Iterator[TestClient]:  # noqa: F811
    with running_app(module_environ, IDP_PHONE_DEFAULT_REGION="IR", **twilio_settings(stub)) as client:
        yield client


@pytest.fixture
def closed_site(module_environ: dict[str, str]) -> Iterator[TestClient]:
    with running_app(module_environ, IDP_SELF_REGISTRATION="off") as client:
        yield client


@pytest.fixture
def app(site: TestClient) -> RegisteredClient:
    return add_client(site)


# --- helpers ------------------------------------------------------------------------------------


def add_client(site: TestClient, *, first_party: bool = True, auth_method: str = "none") -> RegisteredClient:
    ctx = ctx_of(site)
    with ctx.db.begin() as db:
        made = create_client(
            db,
            ctx.secret_key,
            name="Phone app",
            redirect_uris=["https://app.example/cb"],
            auth_method=auth_method,
            first_party=first_party,
            allow_http=True,
        )
        return RegisteredClient(made.client.id, made.secret, made.client.redirect_uris[0])


def add_user(site: TestClient, **kwargs: Any) -> User:
    kwargs.setdefault("verified", True)
    kwargs.setdefault("password", PASSWORD)
    with ctx_of(site).db.begin() as db, passwords_hashed_once():
        user = create_user(db, **kwargs)
        db.expunge(user)
        return user


def new_email() -> str:
    return f"fpa-{secrets.token_hex(5)}@example.com"


def new_phone() -> str:
    return f"+98912{secrets.randbelow(10**7):07d}"


def post(site: TestClient, app: RegisteredClient | None, **data: str) -> httpx.Response:
    """A request of ``app``: a public client names itself by ``client_id`` (unless it continues with
    an ``auth_session``, which names it), a confidential one authenticates with Basic."""
    if app is None:
        return site.post(PATH, data=data)
    if app.client_secret is not None:
        return site.post(PATH, data=data, auth=app.auth)
    if "auth_session" in data:
        return site.post(PATH, data=data)
    return site.post(PATH, data={"client_id": app.client_id, **data})


def begin(site: TestClient, app: RegisteredClient, login_hint: str, **extra: str) -> tuple[dict[str, Any], str]:
    """The first request: its challenge and the PKCE verifier."""
    verifier, challenge = pkce_pair()
    params = {"scope": SCOPE, "code_challenge": challenge, "code_challenge_method": "S256", "login_hint": login_hint}
    response = post(site, app, **(params | extra))
    assert response.status_code == 403, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json(), verifier


def assert_error(response: httpx.Response, error: str, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    return body


def authorization_code(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["authorization_code"]
    return body["authorization_code"]


def relying_party(site: TestClient, app: RegisteredClient) -> OAuth2Client:
    """Authlib's client on the in-process app: it sends the verifier and, having no redirect URI,
    none."""
    return OAuth2Client(
        client_id=app.client_id,
        client_secret=app.client_secret,
        token_endpoint_auth_method="none" if app.client_secret is None else "client_secret_basic",
        code_challenge_method="S256",
        transport=site._transport,
    )


def tokens(site: TestClient, app: RegisteredClient, code: str, verifier: str) -> dict[str, Any]:
    with relying_party(site, app) as client:
        return dict(client.fetch_token(TEST_ISSUER + "/token", code=code, code_verifier=verifier))


def verified_claims(site: TestClient, app: RegisteredClient, token: str, **options: Any) -> dict[str, Any]:
    jwks = jwt.PyJWKSet.from_dict(site.get("/jwks.json").json())
    key = jwks[jwt.get_unverified_header(token)["kid"]].key
    return jwt.decode(token, key, algorithms=["RS256"], issuer=TEST_ISSUER, **options)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def events(site: TestClient, name: str, **where: str) -> list[AuditEvent]:
    with ctx_of(site).db() as db:
        return list(db.scalars(select(AuditEvent).filter_by(event=name, **where)))


def turn_on_totp(site: TestClient, user_id: str) -> tuple[str, list[str]]:
    """An authenticator app as the person's second factor: its secret and their recovery codes."""
    ctx = ctx_of(site)
    secret = pyotp.random_base32()
    with ctx.db.begin() as db:
        user = db.get(User, user_id)
        user.totp_secret = totp.seal(ctx.secret_key, secret)
        user.mfa_method = "totp"
        return secret, totp.new_recovery_codes(db, ctx.secret_key, user)


# --- discovery ----------------------------------------------------------------------------------


def test_discovery_names_the_endpoint(site):
    config = site.get("/.well-known/openid-configuration").json()
    assert config["authorization_challenge_endpoint"] == TEST_ISSUER + PATH


# --- the journeys -------------------------------------------------------------------------------


def test_email_code_gives_the_tokens_of_the_browser_flow(site, app, caplog):
    user = add_user(site, email=new_email())
    challenge, verifier = begin(site, app, user.email.upper(), nonce="n-0S6_WzA2Mj")
    assert challenge["error"] == "insufficient_authorization"
    assert challenge["otp_required"] is True and challenge["channel"] == "email"
    assert len(challenge["auth_session"]) >= 43, "256 bits of entropy"

    code = authorization_code(
        post(site, app, auth_session=challenge["auth_session"], otp=emailed_code(site, caplog, user.email))
    )
    issued = tokens(site, app, code, verifier)
    assert issued["token_type"] == "Bearer" and issued["refresh_token"]
    claims = verified_claims(site, app, issued["id_token"], audience=app.client_id)
    assert claims["sub"] == user.id and claims["amr"] == ["otp"] and claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["email"] == user.email and claims["email_verified"] is True
    assert abs(claims["auth_time"] - time.time()) < 30
    access = verified_claims(site, app, issued["access_token"], options={"verify_aud": False})
    assert jwt.get_unverified_header(issued["access_token"])["typ"] == "at+jwt"
    assert access["client_id"] == app.client_id and access["sub"] == user.id

    with ctx_of(site).db() as db:
        session = db.get(BrowserSession, claims["sid"])
        assert session is not None and session.user_id == user.id and session.amr == ["otp"]
    (signed_in,) = events(site, "sign_in", user_id=user.id)
    assert signed_in.client_id == app.client_id and signed_in.outcome == "success"
    assert signed_in.user_agent and signed_in.ip

    refreshed = site.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"], "client_id": app.client_id},
    )
    assert refreshed.status_code == 200, refreshed.text


def test_first_sign_in_by_phone_makes_a_verified_account(site, app, stub):  # noqa: F811
    phone = new_phone()
    challenge, verifier = begin(site, app, "0" + phone[3:])  # a national number, as IR people type it
    assert challenge["channel"] == "sms"
    code = authorization_code(
        post(site, app, auth_session=challenge["auth_session"], otp=texted_code(site, stub, phone))
    )
    claims = verified_claims(site, app, tokens(site, app, code, verifier)["id_token"], audience=app.client_id)
    assert claims["amr"] == ["sms"]
    assert claims["phone_number"] == phone and claims["phone_number_verified"] is True


def test_a_phone_app_signs_in_against_a_running_server(module_environ, stub, tmp_path: Path):  # noqa: F811
    """The whole journey as the issue judges it: httpx, no browser, a real server sending the SMS."""
    environ = {**module_environ, **twilio_settings(stub)}
    process, url = start_server(environ, tmp_path / "serve.log")
    ctx = Context.build(make_settings(environ, IDP_ISSUER=url))
    try:
        with ctx.db.begin() as db:
            made = create_client(
                db,
                ctx.secret_key,
                name="Phone",
                redirect_uris=["https://app.example/cb"],
                auth_method="none",
                first_party=True,
            )
            phone = new_phone()
            user_id = create_user(db, phone=phone, verified=True).id
        endpoint = httpx.get(url + "/.well-known/openid-configuration").json()["authorization_challenge_endpoint"]
        verifier, pkce = pkce_pair()
        started = httpx.post(
            endpoint,
            data={
                "client_id": made.client.id,
                "scope": "openid phone offline_access",
                "code_challenge": pkce,
                "code_challenge_method": "S256",
                "login_hint": phone,
            },
        )
        assert started.status_code == 403, started.text
        answered = httpx.post(
            endpoint, data={"auth_session": started.json()["auth_session"], "otp": stub.code_for(phone)}
        )
        code = authorization_code(answered)
        with OAuth2Client(client_id=made.client.id, token_endpoint_auth_method="none") as client:
            issued = client.fetch_token(url + "/token", code=code, code_verifier=verifier)
        key = jwt.PyJWKClient(url + "/jwks.json").get_signing_key_from_jwt(issued["id_token"]).key
        claims = jwt.decode(issued["id_token"], key, algorithms=["RS256"], audience=made.client.id, issuer=url)
        assert claims["sub"] == user_id and claims["amr"] == ["sms"] and claims["sid"]
        userinfo = httpx.get(url + "/userinfo", headers={"Authorization": f"Bearer {issued['access_token']}"})
        assert userinfo.json()["phone_number"] == phone
    finally:
        ctx.close()
        process.terminate()
        process.wait(timeout=10)


def test_password_answers_the_challenge(site, app):
    user = add_user(site, email=new_email())
    challenge, verifier = begin(site, app, user.email)
    code = authorization_code(post(site, app, auth_session=challenge["auth_session"], password=PASSWORD))
    claims = verified_claims(site, app, tokens(site, app, code, verifier)["id_token"], audience=app.client_id)
    assert claims["sub"] == user.id and claims["amr"] == ["pwd"]


def test_second_factor_is_the_next_challenge(site, app, caplog):
    user = add_user(site, email=new_email())
    secret, _ = turn_on_totp(site, user.id)
    first, verifier = begin(site, app, user.email)
    second = post(site, app, auth_session=first["auth_session"], otp=emailed_code(site, caplog, user.email))
    body = assert_error(second, "insufficient_authorization", 403)
    assert body["second_factor"] is True and body["channel"] == "totp" and body["otp_required"] is True
    assert body["auth_session"] != first["auth_session"], "a new auth_session once the first factor is proven"
    spent = post(site, app, client_id=app.client_id, auth_session=first["auth_session"], otp="123456")
    assert_error(spent, "invalid_session")
    assert_error(post(site, app, auth_session=body["auth_session"], password=PASSWORD), "invalid_request")

    code = authorization_code(post(site, app, auth_session=body["auth_session"], otp=pyotp.TOTP(secret).now()))
    claims = verified_claims(site, app, tokens(site, app, code, verifier)["id_token"], audience=app.client_id)
    assert claims["amr"] == ["otp", "mfa"]
    assert events(site, "second_factor_requested", user_id=user.id)


def test_password_then_a_recovery_code(site, app):
    user = add_user(site, email=new_email())
    _, recovery = turn_on_totp(site, user.id)
    first, verifier = begin(site, app, user.email)
    body = assert_error(
        post(site, app, auth_session=first["auth_session"], password=PASSWORD), "insufficient_authorization", 403
    )
    assert body["second_factor"] is True
    code = authorization_code(post(site, app, auth_session=body["auth_session"], otp=recovery[0]))
    claims = verified_claims(site, app, tokens(site, app, code, verifier)["id_token"], audience=app.client_id)
    assert claims["amr"] == ["pwd", "otp", "mfa"]


# --- refusals -----------------------------------------------------------------------------------


def test_a_wrong_code_spends_a_try_and_keeps_the_auth_session(site, app, caplog):
    user = add_user(site, email=new_email())
    challenge, _ = begin(site, app, user.email)
    code = emailed_code(site, caplog, user.email)
    again = assert_error(
        post(site, app, auth_session=challenge["auth_session"], otp=wrong(code)), "insufficient_authorization", 403
    )
    assert again["auth_session"] == challenge["auth_session"] and again["error_description"]
    with ctx_of(site).db() as db:
        assert db.scalar(select(OneTimeCode.attempts).where(OneTimeCode.identifier == user.email)) == 1
        assert db.scalar(select(User.failed_sign_ins).where(User.id == user.id)) == 1
    authorization_code(post(site, app, auth_session=challenge["auth_session"], otp=code))


def test_three_wrong_codes_end_the_auth_session(site, app, caplog):
    user = add_user(site, email=new_email())
    challenge, _ = begin(site, app, user.email)
    code = emailed_code(site, caplog, user.email)
    for _ in range(2):
        assert_error(
            post(site, app, auth_session=challenge["auth_session"], otp=wrong(code)), "insufficient_authorization", 403
        )
    ended = assert_error(post(site, app, auth_session=challenge["auth_session"], otp=wrong(code)), "access_denied")
    assert "auth_session" not in ended
    assert_error(
        post(site, app, client_id=app.client_id, auth_session=challenge["auth_session"], otp=code), "invalid_session"
    )


def test_wrong_passwords_lock_the_account(site, app):
    user = add_user(site, email=new_email())
    challenge, _ = begin(site, app, user.email)
    for _ in range(5):
        failed = post(site, app, auth_session=challenge["auth_session"], password="not the password")
        assert assert_error(failed, "insufficient_authorization", 403)["auth_session"] == challenge["auth_session"]
    locked = post(site, app, auth_session=challenge["auth_session"], password=PASSWORD)
    assert assert_error(locked, "insufficient_authorization", 403)["error_description"] == "the sign-in failed"
    assert events(site, "account_locked", user_id=user.id)
    reasons = [e.detail["reason"] for e in events(site, "sign_in", user_id=user.id, outcome="failure")]
    assert reasons == ["wrong_password"] * 4 + ["locked_now", "locked"]


def test_a_client_that_is_not_first_party_is_refused(site):
    third_party = add_client(site, first_party=False)
    email = new_email()
    verifier, challenge = pkce_pair()
    response = post(
        site, third_party, scope="openid", code_challenge=challenge, code_challenge_method="S256", login_hint=email
    )
    assert_error(response, "unauthorized_client")
    assert messages_to(site, email) == 0


def test_an_auth_session_is_spent_by_its_code(site, app, caplog):
    user = add_user(site, email=new_email())
    challenge, _ = begin(site, app, user.email)
    code = emailed_code(site, caplog, user.email)
    authorization_code(post(site, app, auth_session=challenge["auth_session"], otp=code))
    assert_error(
        post(site, app, client_id=app.client_id, auth_session=challenge["auth_session"], otp=code), "invalid_session"
    )


def test_an_auth_session_is_bound_to_its_client(site, app, caplog):
    user = add_user(site, email=new_email())
    other = add_client(site)
    challenge, _ = begin(site, app, user.email)
    code = emailed_code(site, caplog, user.email)
    stolen = post(site, other, client_id=other.client_id, auth_session=challenge["auth_session"], otp=code)
    assert_error(stolen, "invalid_session")
    authorization_code(post(site, app, auth_session=challenge["auth_session"], otp=code))


def test_an_expired_auth_session_is_refused(site, app, caplog):
    user = add_user(site, email=new_email())
    challenge, _ = begin(site, app, user.email)
    with ctx_of(site).db.begin() as db:
        db.execute(update(PendingSignIn).values(expires_at=PendingSignIn.created_at))
    answer = post(site, app, client_id=app.client_id, auth_session=challenge["auth_session"], otp="000000")
    assert_error(answer, "invalid_session")


def test_a_confidential_client_authenticates_at_every_step(site, caplog):
    confidential = add_client(site, auth_method="client_secret_basic")
    user = add_user(site, email=new_email())
    challenge, verifier = begin(site, confidential, user.email)
    code = emailed_code(site, caplog, user.email)
    unauthenticated = site.post(PATH, data={"auth_session": challenge["auth_session"], "otp": code})
    assert_error(unauthenticated, "invalid_client", 401)
    code = authorization_code(post(site, confidential, auth_session=challenge["auth_session"], otp=code))
    assert tokens(site, confidential, code, verifier)["id_token"]


def test_the_code_is_exchanged_with_its_verifier_and_no_redirect_uri(site, app, caplog):
    user = add_user(site, email=new_email())
    challenge, verifier = begin(site, app, user.email)
    code = authorization_code(
        post(site, app, auth_session=challenge["auth_session"], otp=emailed_code(site, caplog, user.email))
    )
    grant = {"grant_type": "authorization_code", "client_id": app.client_id, "code": code}
    assert_error(site.post("/token", data=grant), "invalid_grant")
    assert_error(site.post("/token", data={**grant, "code_verifier": pkce_pair()[0]}), "invalid_grant")
    with_redirect = {**grant, "code_verifier": verifier, "redirect_uri": app.redirect_uri}
    assert_error(site.post("/token", data=with_redirect), "invalid_grant")
    assert site.post("/token", data={**grant, "code_verifier": verifier}).status_code == 200


def test_an_unknown_address_answers_as_a_known_one(closed_site, caplog):
    app = add_client(closed_site)
    known = add_user(closed_site, email=new_email())
    unknown = new_email()
    answers = [begin(closed_site, app, email)[0] for email in (known.email, unknown)]
    assert [sorted(a) for a in answers] == [sorted(answers[0])] * 2
    assert [(a["error"], a["channel"], len(a["auth_session"])) for a in answers] == [
        ("insufficient_authorization", "email", len(answers[0]["auth_session"]))
    ] * 2
    guessed = [post(closed_site, app, auth_session=a["auth_session"], otp="123456") for a in answers]
    assert [(r.status_code, r.json()["error"], r.json()["error_description"]) for r in guessed] == [
        (403, "insufficient_authorization", "the code is wrong or has expired")
    ] * 2
    emailed_code(closed_site, caplog, known.email)
    assert messages_to(closed_site, unknown) == 0, "no account is made, and nothing is sent, with registration off"


def test_too_many_codes_to_one_address_wait(site, app):
    email = new_email()
    for _ in range(3):
        begin(site, app, email)
    verifier, challenge = pkce_pair()
    refused = post(site, app, scope="openid", code_challenge=challenge, code_challenge_method="S256", login_hint=email)
    assert_error(refused, "temporarily_unavailable", 429)
    assert 0 < int(refused.headers["retry-after"]) <= 120


def test_the_rate_limit_per_address_holds(module_environ):
    with running_app(
        module_environ, peer=new_address(), IDP_RATE_LIMITING="on", IDP_RATE_LIMIT_VERIFICATION="2/hour"
    ) as limited:
        app = add_client(limited)
        for _ in range(2):
            begin(limited, app, new_email())
        verifier, challenge = pkce_pair()
        refused = post(
            limited, app, scope="openid", code_challenge=challenge, code_challenge_method="S256", login_hint=new_email()
        )
        body = assert_error(refused, "temporarily_unavailable", 429)
        assert "this address" in body["error_description"]
        assert int(refused.headers["retry-after"]) > 0
        assert events(limited, "rate_limited", client_id=app.client_id)


def test_text_messages_go_only_to_the_regions_served(module_environ, stub):  # noqa: F811
    with running_app(module_environ, IDP_PHONE_REGIONS="DE", **twilio_settings(stub)) as site:
        app = add_client(site)
        verifier, challenge = pkce_pair()
        refused = post(
            site, app, scope="openid", code_challenge=challenge, code_challenge_method="S256", login_hint=new_phone()
        )
        assert assert_error(refused, "invalid_request")["error_description"] == "no text message can go to this number"


@pytest.mark.parametrize(
    ("fields", "error", "status"),
    [
        ({"login_hint": None}, "invalid_request", 400),
        ({"code_challenge": None}, "invalid_request", 400),
        ({"code_challenge_method": "plain"}, "invalid_request", 400),
        ({"code_challenge": "short"}, "invalid_request", 400),
        ({"login_hint": "x" * 321}, "invalid_request", 400),
        ({"login_hint": "not a phone"}, "invalid_request", 400),
        ({"login_hint": "a@b@c"}, "invalid_request", 400),
        ({"scope": None}, "invalid_scope", 400),
        ({"scope": "openid admin"}, "invalid_scope", 400),
        ({"response_type": "token"}, "unsupported_response_type", 400),
        ({"client_id": None}, "invalid_client", 401),
        ({"auth_session": "x" * 40}, "invalid_request", 400),
        ({"auth_session": "x" * 40, "otp": "1", "password": "p"}, "invalid_request", 400),
        ({"auth_session": "x" * 101, "otp": "1"}, "invalid_request", 400),
        ({"auth_session": "x" * 40, "otp": "1" * 65}, "invalid_request", 400),
        ({"auth_session": "x" * 40, "otp": "123456"}, "invalid_session", 400),
    ],
)
def test_missing_malformed_and_oversized_input(site, app, fields, error, status):
    _, challenge = pkce_pair()
    data = {
        "client_id": app.client_id,
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "login_hint": new_email(),
        **fields,
    }
    response = site.post(PATH, data={k: v for k, v in data.items() if v is not None})
    body = assert_error(response, error, status)
    assert "auth_session" not in body


def test_an_oversized_or_repeated_body_is_refused(site, app):
    assert_error(site.post(PATH, data={"client_id": app.client_id, "login_hint": "x" * 70_000}), "invalid_request")
    repeated = site.post(
        PATH,
        content=f"client_id={app.client_id}&login_hint=a&login_hint=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_error(repeated, "invalid_request")
    assert_error(site.post(PATH, json={"client_id": app.client_id}), "invalid_request")


def test_the_claims_parameter_reaches_the_tokens_of_a_first_party_app(site, app):
    """OIDC Core §5.5 at the authorization challenge endpoint: claims asked for by name reach the
    ID token, those of a scope the app may not have (``groups``) do not; a malformed parameter is
    refused before any code goes out, and a ``sub`` asked for by value that is not the person who
    signs in gives no code."""
    user = add_user(site, email=new_email(), name="Ada Native")
    asked = json.dumps({"id_token": {"name": {"essential": True}, "groups": None}})
    challenge, verifier = begin(site, app, user.email, scope="openid", claims=asked)
    code = authorization_code(post(site, app, auth_session=challenge["auth_session"], password=PASSWORD))
    claims = verified_claims(site, app, tokens(site, app, code, verifier)["id_token"], audience=app.client_id)
    assert claims["name"] == "Ada Native" and "groups" not in claims and "email" not in claims

    _, code_challenge = pkce_pair()
    malformed = {"scope": "openid", "code_challenge": code_challenge, "code_challenge_method": "S256"}
    refused = post(site, app, **malformed, login_hint=user.email, claims='{"userinfo": 1}')
    assert "claims.userinfo must be a JSON object" in assert_error(refused, "invalid_request")["error_description"]

    someone_else = json.dumps({"id_token": {"sub": {"value": "someone-else"}}})
    challenge, _ = begin(site, app, user.email, scope="openid", claims=someone_else)
    refused = post(site, app, auth_session=challenge["auth_session"], password=PASSWORD)
    assert "not the one the request names" in assert_error(refused, "login_required")["error_description"]
