"""Client authentication at the token endpoint: RFC 6749 §2.3, RFC 7523 §2.2 and §3, OIDC Core §9."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import event, update

from idp.oauth import client_jwks
from idp.storage import Client

from .flows import exchange, pkce_pair, sign_in
from .services import QuietHandler, http_server
from .test_audit import events

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ISSUER = "http://testserver"


def assert_invalid_client(response: httpx.Response, *, basic: bool) -> None:
    """RFC 6749 §5.2: 401; a client that tried the Authorization header is told the scheme to use."""
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers.get("cache-control") == "no-store"
    if basic:
        assert response.headers["www-authenticate"].lower().startswith("basic"), response.headers


def basic_header(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def form_encode_every_character(value: str) -> str:
    """RFC 6749 §2.3.1: both parts are form-urlencoded before Basic; here even where not needed."""
    return "".join(f"%{byte:02X}" for byte in value.encode())


CC = {"grant_type": "client_credentials"}


@pytest.fixture
def basic_client(make_client):  # type: ignore[no-untyped-def]
    return make_client(redirect_uris=[], grant_types=["client_credentials"], scope="api.read")


@pytest.fixture
def post_client(make_client):  # type: ignore[no-untyped-def]
    return make_client(
        redirect_uris=[], grant_types=["client_credentials"], scope="api.read", auth_method="client_secret_post"
    )


# -- client_secret_basic -----------------------------------------------------------------------


def test_basic_good(http, basic_client):
    response = http.post("/token", data=CC, auth=basic_client.auth)
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]


def test_basic_wrong_secret(http, basic_client):
    response = http.post("/token", data=CC, auth=(basic_client.client_id, basic_client.client_secret + "x"))
    assert_invalid_client(response, basic=True)


def test_basic_unknown_client(http):
    response = http.post("/token", data=CC, auth=("no-such-client", "secret"))
    assert_invalid_client(response, basic=True)


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic ",
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    ],
)
def test_basic_malformed_header(http, header):
    response = http.post("/token", data=CC, headers={"Authorization": header})
    assert_invalid_client(response, basic=True)


def test_basic_credentials_are_form_urldecoded(http, basic_client):
    headers = basic_header(
        form_encode_every_character(basic_client.client_id), form_encode_every_character(basic_client.client_secret)
    )
    response = http.post("/token", data=CC, headers=headers)
    assert response.status_code == 200, response.text


def test_basic_client_id_in_body_must_match(http, basic_client, post_client):
    response = http.post("/token", data={**CC, "client_id": post_client.client_id}, auth=basic_client.auth)
    assert_invalid_client(response, basic=True)


def test_a_client_that_named_no_method_sends_its_secret_either_way(http, basic_client):
    """Relying-party libraries at their defaults differ: half send the secret in the body."""
    assert http.post("/token", data=CC, auth=basic_client.auth).status_code == 200
    in_body = {**CC, "client_id": basic_client.client_id, "client_secret": basic_client.client_secret}
    assert http.post("/token", data=in_body).status_code == 200


def test_a_client_that_named_basic_may_not_use_post(http, make_client):
    pinned = make_client(
        redirect_uris=[], grant_types=["client_credentials"], scope="api.read", auth_method="client_secret_basic"
    )
    assert http.post("/token", data=CC, auth=pinned.auth).status_code == 200
    response = http.post("/token", data={**CC, "client_id": pinned.client_id, "client_secret": pinned.client_secret})
    assert_invalid_client(response, basic=False)


# -- client_secret_post ------------------------------------------------------------------------


def test_post_good(http, post_client):
    response = http.post(
        "/token", data={**CC, "client_id": post_client.client_id, "client_secret": post_client.client_secret}
    )
    assert response.status_code == 200, response.text


def test_post_wrong_secret(http, post_client):
    response = http.post("/token", data={**CC, "client_id": post_client.client_id, "client_secret": "nope"})
    assert_invalid_client(response, basic=False)
    assert "www-authenticate" not in response.headers


def test_post_client_may_not_use_basic(http, post_client):
    response = http.post("/token", data=CC, auth=post_client.auth)
    assert_invalid_client(response, basic=True)


def test_basic_and_post_at_once_is_invalid_request(http, post_client):
    response = http.post(
        "/token",
        data={**CC, "client_id": post_client.client_id, "client_secret": post_client.client_secret},
        auth=post_client.auth,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


# -- none --------------------------------------------------------------------------------------


def test_public_client_exchanges_a_code_with_pkce_and_client_id_only(http, make_client, make_user):
    client = make_client(auth_method="none")
    assert client.client_secret is None
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, make_user(), challenge)["code"]
    response = exchange(http, client, code, verifier)
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]


def test_public_client_without_client_id_is_refused(http, make_client, make_user):
    client = make_client(auth_method="none")
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, make_user(), challenge)["code"]
    response = http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client.redirect_uri,
            "code_verifier": verifier,
        },
    )
    assert_invalid_client(response, basic=False)


def test_confidential_client_sending_only_client_id_is_refused(http, make_client, make_user):
    client = make_client()
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, make_user(), challenge)["code"]
    response = http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client.redirect_uri,
            "code_verifier": verifier,
            "client_id": client.client_id,
        },
    )
    assert_invalid_client(response, basic=False)
    # The code was not spent by the unauthenticated attempt.
    assert exchange(http, client, code, verifier).status_code == 200


# -- private_key_jwt ---------------------------------------------------------------------------


class JwksServer:
    """A client's JWKS endpoint on 127.0.0.1: one document per path, changeable by the test, each
    path answered after its own delay, or with a 500; it counts the requests to each path."""

    def __init__(self) -> None:
        self.url = ""
        self.documents: dict[str, dict[str, Any]] = {}
        self.delays: dict[str, float] = {}
        self.broken: set[str] = set()
        self.hits: Counter[str] = Counter()
        lock = threading.Lock()
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                with lock:
                    server.hits[self.path] += 1
                time.sleep(server.delays.get(self.path, 0))
                document = server.documents.get(self.path)
                if self.path in server.broken:
                    self.respond(500, b"{}")
                else:
                    self.respond(200 if document is not None else 404, json.dumps(document or {}).encode())

        self.handler = Handler

    def publish(self, *keys: RSAKey) -> str:
        """Serve the public halves of ``keys`` at a new path; its URL."""
        path = f"/{secrets.token_hex(8)}/jwks.json"
        self.documents[path] = KeySet(list(keys)).as_dict(private=False)
        return self.url + path

    def fetches(self, url: str) -> int:
        return self.hits[url.removeprefix(self.url)]


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    with http_server(server.handler) as url:
        server.url = url
        yield server


def new_key() -> RSAKey:
    return RSAKey.generate_key(2048, auto_kid=True)


@pytest.fixture(scope="module")
def client_key() -> RSAKey:
    return new_key()


@pytest.fixture
def jwt_client(make_client, jwks_server, client_key):  # type: ignore[no-untyped-def]
    return make_client(
        redirect_uris=[],
        grant_types=["client_credentials"],
        scope="api.read",
        auth_method="private_key_jwt",
        jwks_uri=jwks_server.publish(client_key),
    )


def assertion(client_id: str, key: RSAKey, **overrides: Any) -> str:
    stamp = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": ISSUER,
        "iat": stamp,
        "exp": stamp + 60,
        "jti": secrets.token_urlsafe(16),
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


def with_assertion(signed: str, **extra: str) -> dict[str, str]:
    return {**CC, "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed, **extra}


def test_private_key_jwt_good(http, jwt_client, client_key):
    response = http.post("/token", data=with_assertion(assertion(jwt_client.client_id, client_key)))
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]


def test_private_key_jwt_with_client_id_in_the_body(http, jwt_client, client_key):
    signed = assertion(jwt_client.client_id, client_key)
    response = http.post("/token", data=with_assertion(signed, client_id=jwt_client.client_id))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "audience",
    [
        pytest.param(ISSUER + "/token", id="token-endpoint"),
        pytest.param(ISSUER + "/revoke", id="revocation-endpoint"),
        pytest.param(ISSUER + "/introspect", id="introspection-endpoint"),
        pytest.param([ISSUER], id="array-of-the-issuer"),
        pytest.param([ISSUER, ISSUER + "/token"], id="array-with-the-issuer"),
        pytest.param(ISSUER + "/", id="issuer-with-a-slash"),
    ],
)
@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect"])
def test_private_key_jwt_audience_is_the_issuer_alone(http, jwt_client, client_key, audience, path):
    """draft-ietf-oauth-rfc7523bis §4 (RFC 7523 §3 item 3, case b): a client authentication JWT's
    aud "MUST use the issuer identifier [RFC8414] of the authorization server as its sole value";
    "the token endpoint URL of the authorization server MUST NOT be used as an audience value". An
    assertion a client made for another audience, leaked or phished, is no credential here."""
    signed = assertion(jwt_client.client_id, client_key, aud=audience)
    data = with_assertion(signed) if path == "/token" else with_assertion(signed, token="anything")
    assert_invalid_client(http.post(path, data=data), basic=False)


def test_private_key_jwt_replay_is_refused(http, jwt_client, client_key):
    signed = assertion(jwt_client.client_id, client_key)
    assert http.post("/token", data=with_assertion(signed)).status_code == 200
    assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)


def test_an_assertion_stays_spent_when_the_request_is_refused_after_it(http, jwt_client, client_key):
    """The grant's refusal rolls back the request's transaction; the assertion was spent in its own."""
    signed = assertion(jwt_client.client_id, client_key)
    refused = http.post("/token", data=with_assertion(signed, scope="openid"))
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_scope")
    assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)


def test_private_key_jwt_same_jti_in_a_new_assertion_is_refused(http, jwt_client, client_key):
    jti = secrets.token_urlsafe(16)
    first = assertion(jwt_client.client_id, client_key, jti=jti)
    assert http.post("/token", data=with_assertion(first)).status_code == 200
    second = assertion(jwt_client.client_id, client_key, jti=jti, exp=int(time.time()) + 120)
    assert_invalid_client(http.post("/token", data=with_assertion(second)), basic=False)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"aud": "https://elsewhere.example/token"}, id="wrong-aud"),
        pytest.param({"aud": None}, id="no-aud"),
        pytest.param({"exp": -10}, id="expired"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"exp": 3600 + 120}, id="exp-over-an-hour-away"),
        pytest.param({"sub": "someone-else"}, id="sub-not-iss"),
        pytest.param({"jti": None}, id="no-jti"),
        pytest.param({"jti": ""}, id="empty-jti"),
        pytest.param({"nbf": 600}, id="not-yet-valid"),
        pytest.param({"iat": 600}, id="issued-in-the-future"),
    ],
)
def test_private_key_jwt_bad_claims_are_refused(http, jwt_client, client_key, overrides):
    overrides = dict(overrides)
    for claim in ("exp", "nbf", "iat"):
        if isinstance(overrides.get(claim), int):
            overrides[claim] += int(time.time())
    signed = assertion(jwt_client.client_id, client_key, **overrides)
    assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)


def test_private_key_jwt_iss_not_the_client_is_refused(http, jwt_client, client_key):
    signed = assertion(jwt_client.client_id, client_key, iss="someone-else")
    response = http.post("/token", data=with_assertion(signed, client_id=jwt_client.client_id))
    assert_invalid_client(response, basic=False)


def test_private_key_jwt_signed_by_another_key_is_refused(http, jwt_client):
    signed = assertion(jwt_client.client_id, new_key())
    assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)


def test_private_key_jwt_signed_by_the_right_key_with_a_foreign_kid_is_refused(http, jwt_client, client_key):
    stranger = new_key()
    claims = {
        "iss": jwt_client.client_id,
        "sub": jwt_client.client_id,
        "aud": ISSUER,
        "exp": int(time.time()) + 60,
        "jti": secrets.token_urlsafe(8),
    }
    signed = jwt.encode({"alg": "RS256", "kid": stranger.kid}, claims, stranger)
    assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)


def test_private_key_jwt_wrong_assertion_type_is_refused(http, jwt_client, client_key):
    data = with_assertion(assertion(jwt_client.client_id, client_key))
    data["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
    assert_invalid_client(http.post("/token", data=data), basic=False)


def test_private_key_jwt_garbage_assertion_is_refused(http, jwt_client):
    data = with_assertion("not.a.jwt", client_id=jwt_client.client_id)
    assert_invalid_client(http.post("/token", data=data), basic=False)


def test_an_assertion_naming_its_client_with_a_lone_surrogate_is_refused(http):
    """A JSON escape makes ``iss`` text no database can look up: refused, not a 500."""
    header, payload = (
        base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in (b'{"alg": "RS256"}', rb'{"iss": "\ud800"}')
    )
    assert_invalid_client(http.post("/token", data=with_assertion(f"{header}.{payload}.c2ln")), basic=False)


@pytest.mark.parametrize("jti", ["\ud800", "a\u0000b"])
def test_an_assertion_whose_jti_cannot_be_stored_is_refused(http, jwt_client, client_key, jti):
    """Its jti is kept to refuse a replay: one no database takes was a 500."""
    stamp = int(time.time())
    claims = {"iss": jwt_client.client_id, "sub": jwt_client.client_id, "aud": ISSUER, "exp": stamp + 60, "jti": jti}
    signed = jws.serialize_compact({"alg": "RS256", "kid": client_key.kid}, json.dumps(claims), client_key)
    assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)


def test_private_key_jwt_client_may_not_use_a_secret(http, jwt_client):
    response = http.post("/token", data=CC, auth=(jwt_client.client_id, "anything"))
    assert_invalid_client(response, basic=True)


def test_secret_client_may_not_use_private_key_jwt(http, basic_client, client_key):
    signed = assertion(basic_client.client_id, client_key)
    assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)


def test_authlib_private_key_jwt_client(live_server, jwks_server):
    """A standard client library authenticates with private_key_jwt against a real server."""
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

    key = new_key()
    created = live_server.idp(
        "clients",
        "create",
        "--name",
        "Authlib service",
        "--grant-type",
        "client_credentials",
        "--scope",
        "api.read",
        "--token-endpoint-auth-method",
        "private_key_jwt",
        "--jwks-uri",
        jwks_server.publish(key),
    )
    assert created.returncode == 0, created.stderr
    output = json.loads(created.stdout)
    assert "client_secret" not in output
    token_endpoint = live_server.url + "/token"
    pem = key.as_pem(private=True).decode()
    with OAuth2Client(
        client_id=output["client_id"], client_secret=pem, token_endpoint_auth_method=PrivateKeyJWT(live_server.url)
    ) as client:
        token = client.fetch_token(token_endpoint, grant_type="client_credentials")
        assert token["access_token"]
        assert token["token_type"] == "Bearer"
        # A second request signs a new assertion with a new jti, so it is not a replay.
        assert client.fetch_token(token_endpoint, grant_type="client_credentials")["access_token"]


def test_private_key_jwt_unsigned_assertion_is_refused(http, jwt_client):
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {
        "iss": jwt_client.client_id,
        "sub": jwt_client.client_id,
        "aud": ISSUER,
        "exp": int(time.time()) + 60,
        "jti": secrets.token_urlsafe(8),
    }
    unsigned = f"{b64({'alg': 'none'})}.{b64(claims)}."
    assert_invalid_client(http.post("/token", data=with_assertion(unsigned)), basic=False)


def test_public_client_refreshes_with_client_id_only(http, make_client, make_user):
    client = make_client(auth_method="none")
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, make_user(), challenge)["code"]
    tokens = exchange(http, client, code, verifier).json()
    response = http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client.client_id},
    )
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"] != tokens["refresh_token"]


def test_private_key_jwt_without_kid_is_tried_against_every_published_key(http, make_client, jwks_server):
    """Authlib's PrivateKeyJWT sends no kid: a client publishing two keys while it rotates still works."""
    old, current = new_key(), new_key()
    client = make_client(
        redirect_uris=[],
        grant_types=["client_credentials"],
        scope="api.read",
        auth_method="private_key_jwt",
        jwks_uri=jwks_server.publish(old, current),
    )
    for key in (current, old):
        stamp = int(time.time())
        claims = {
            "iss": client.client_id,
            "sub": client.client_id,
            "aud": ISSUER,
            "exp": stamp + 60,
            "jti": secrets.token_urlsafe(16),
        }
        signed = jwt.encode({"alg": "RS256"}, claims, key)
        response = http.post("/token", data=with_assertion(signed))
        assert response.status_code == 200, response.text
    stranger = jwt.encode({"alg": "RS256"}, {**claims, "jti": secrets.token_urlsafe(16)}, new_key())
    assert_invalid_client(http.post("/token", data=with_assertion(stranger)), basic=False)


# -- fetching a client's JWKS: once an interval, outside any transaction -----------------------


def make_jwt_client(make_client, jwks_uri: str):  # type: ignore[no-untyped-def]
    return make_client(
        redirect_uris=[],
        grant_types=["client_credentials"],
        scope="api.read",
        auth_method="private_key_jwt",
        jwks_uri=jwks_uri,
    )


def test_bad_assertions_fetch_the_jwks_once_an_interval(http, make_client, jwks_server, client_key):
    """Each assertion signed by a key the client never published sent us to its JWKS endpoint again:
    the time of the last fetch was written in the transaction the failure rolled back."""
    jwks_uri = jwks_server.publish(client_key)
    client = make_jwt_client(make_client, jwks_uri)
    stranger = new_key()
    for _ in range(8):
        signed = assertion(client.client_id, stranger)
        assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)
    assert jwks_server.fetches(jwks_uri) == 1
    good = http.post("/token", data=with_assertion(assertion(client.client_id, client_key)))
    assert good.status_code == 200, good.text
    assert jwks_server.fetches(jwks_uri) == 1


def test_the_jwks_is_fetched_while_the_request_holds_no_connection(
    http, ctx, make_client, jwks_server, client_key, monkeypatch
):
    """No transaction (and no pooled connection) of the request is open while a slow JWKS host
    answers: each connection is counted against the thread that checked it out."""
    held: Counter[int] = Counter()

    def checkout(_dbapi, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        record.info["thread"] = threading.get_ident()
        held[record.info["thread"]] += 1

    def checkin(_dbapi, record) -> None:  # type: ignore[no-untyped-def]
        if "thread" in record.info:
            held[record.info.pop("thread")] -= 1

    holding: list[int] = []
    download = client_jwks._download

    def watched(client_id: str, uri: str) -> Any:
        holding.append(held[threading.get_ident()])
        return download(client_id, uri)

    monkeypatch.setattr(client_jwks, "_download", watched)
    client = make_jwt_client(make_client, jwks_server.publish(client_key))
    event.listen(ctx.engine, "checkout", checkout)
    event.listen(ctx.engine, "checkin", checkin)
    try:
        response = http.post("/token", data=with_assertion(assertion(client.client_id, client_key)))
    finally:
        event.remove(ctx.engine, "checkout", checkout)
        event.remove(ctx.engine, "checkin", checkin)
    assert response.status_code == 200, response.text
    assert holding == [0]


def test_a_failing_jwks_endpoint_is_asked_once_an_interval(http, make_client, jwks_server, client_key):
    jwks_uri = jwks_server.publish(client_key)
    jwks_server.broken.add(jwks_uri.removeprefix(jwks_server.url))
    client = make_jwt_client(make_client, jwks_uri)
    for _ in range(8):
        signed = assertion(client.client_id, client_key)
        assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)
    assert jwks_server.fetches(jwks_uri) == 1


def test_concurrent_bad_assertions_fetch_the_jwks_once(http, make_client, jwks_server, client_key):
    jwks_uri = jwks_server.publish(client_key)
    client = make_jwt_client(make_client, jwks_uri)
    stranger = new_key()
    signed = [assertion(client.client_id, stranger) for _ in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda one: http.post("/token", data=with_assertion(one)).status_code, signed))
    assert statuses == [401] * 16
    assert jwks_server.fetches(jwks_uri) == 1


def test_a_slow_jwks_host_does_not_stall_other_clients(http, make_client, jwks_server, client_key):
    """Sixty bad assertions for a client whose JWKS host takes seconds to answer held every worker
    thread (and on PostgreSQL a pooled connection each) for as long: another client's token
    request waited behind them."""
    slow_uri = jwks_server.publish(client_key)
    jwks_server.delays[slow_uri.removeprefix(jwks_server.url)] = 6.0
    slow = make_jwt_client(make_client, slow_uri)
    other_key = new_key()
    other = make_jwt_client(make_client, jwks_server.publish(other_key))
    stranger = new_key()
    signed = [assertion(slow.client_id, stranger) for _ in range(60)]
    with ThreadPoolExecutor(max_workers=60) as pool:
        pending = [pool.submit(http.post, "/token", data=with_assertion(one)) for one in signed]
        deadline = time.monotonic() + 10
        while jwks_server.fetches(slow_uri) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        started = time.monotonic()
        response = http.post("/token", data=with_assertion(assertion(other.client_id, other_key)))
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert elapsed < 2.5, f"another client's token request took {elapsed:.1f} s"
        assert [p.result().status_code for p in pending] == [401] * 60
    assert jwks_server.fetches(slow_uri) == 1


def test_a_rotated_key_is_fetched_once_the_interval_has_passed(http, ctx, make_client, jwks_server, client_key):
    jwks_uri = jwks_server.publish(client_key)
    client = make_jwt_client(make_client, jwks_uri)
    assert http.post("/token", data=with_assertion(assertion(client.client_id, client_key))).status_code == 200
    rotated = new_key()
    jwks_server.documents[jwks_uri.removeprefix(jwks_server.url)] = KeySet([rotated]).as_dict(private=False)
    signed = assertion(client.client_id, rotated)
    assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)
    assert jwks_server.fetches(jwks_uri) == 1
    with ctx.db.begin() as db:
        db.execute(
            update(Client).where(Client.id == client.client_id).values(jwks_checked_at=Client.jwks_checked_at - 31)
        )
    response = http.post("/token", data=with_assertion(assertion(client.client_id, rotated)))
    assert response.status_code == 200, response.text
    assert jwks_server.fetches(jwks_uri) == 2


def test_an_oversized_jwks_is_not_taken(http, make_client, jwks_server, client_key):
    """A JWKS host cannot make us read, parse and store a document of any size."""
    jwks_uri = jwks_server.publish(client_key)
    path = jwks_uri.removeprefix(jwks_server.url)
    jwks_server.documents[path] = {**jwks_server.documents[path], "padding": "x" * 70_000}
    client = make_jwt_client(make_client, jwks_uri)
    signed = assertion(client.client_id, client_key)
    assert_invalid_client(http.post("/token", data=with_assertion(signed)), basic=False)


# -- refusals are logged and audited ------------------------------------------------------------


def refused_events(ctx: Any, since: int) -> list[Any]:
    return [e for e in events(ctx, "client_authentication_failed") if e.id > since]


def last_event_id(ctx: Any) -> int:
    found = events(ctx, "client_authentication_failed")
    return found[-1].id if found else 0


@pytest.mark.parametrize(
    ("attempt", "reason", "names_the_client"),
    [
        ("unknown client", "unknown_client", True),
        ("wrong secret", "wrong_secret", True),
        ("wrong method", "wrong_method", True),
        ("malformed basic", "malformed", False),
        ("bad assertion", "bad_assertion", False),
        ("public client without a secret", "wrong_method", True),
    ],
)
def test_a_refused_client_authentication_is_logged_and_audited_with_why(
    http, ctx, make_client, post_client, caplog, attempt, reason, names_the_client
):
    secret = "presented-" + secrets.token_hex(8)
    named = post_client.client_id
    requests: dict[str, dict[str, Any]] = {
        "unknown client": {"data": CC, "auth": ("no-such-client-" + secrets.token_hex(4), secret)},
        "wrong secret": {"data": {**CC, "client_id": named, "client_secret": secret}},
        "wrong method": {"data": CC, "auth": (named, secret)},
        "malformed basic": {"data": CC, "headers": {"Authorization": "Basic " + secret}},
        "bad assertion": {"data": {**CC, "client_assertion_type": ASSERTION_TYPE, "client_assertion": secret}},
        "public client without a secret": {"data": {**CC, "client_id": named}},
    }
    since = last_event_id(ctx)
    caplog.set_level("INFO", logger="idp.client_auth")
    response = http.post("/token", **requests[attempt])
    assert response.status_code == 401, response.text
    [event] = refused_events(ctx, since)
    assert event.outcome == "failure"
    assert event.detail["reason"] == reason
    if names_the_client:
        assert event.client_id is not None
    else:
        assert event.client_id is None
    assert event.ip, "the address is kept, as for every event"
    logged = [r.getMessage() for r in caplog.records if r.name == "idp.client_auth"]
    assert len(logged) == 1 and f"reason={reason}" in logged[0]
    assert secret not in repr(event.detail) and secret not in logged[0]


def test_a_wrong_secret_for_a_client_kept_in_memory_is_logged_and_audited_once(http, ctx, basic_client, caplog):
    """A client that authenticated before is kept in the process: a refusal of it could be
    answered without the database, but it is logged and audited exactly once all the same."""
    assert http.post("/token", data=CC, auth=basic_client.auth).status_code == 200
    since = last_event_id(ctx)
    caplog.set_level("INFO", logger="idp.client_auth")
    refused = http.post("/token", data=CC, auth=(basic_client.client_id, "not-the-secret"))
    assert refused.status_code == 401
    assert [e.detail["reason"] for e in refused_events(ctx, since)] == ["wrong_secret"]
    assert len([r for r in caplog.records if r.name == "idp.client_auth"]) == 1


def test_a_client_id_too_long_to_be_one_is_audited_without_it(http, ctx):
    since = last_event_id(ctx)
    response = http.post("/token", data={**CC, "client_id": "x" * 500, "client_secret": "s"})
    assert_invalid_client(response, basic=False)
    [event] = refused_events(ctx, since)
    assert event.client_id is None and event.detail["reason"] == "unknown_client"


def test_a_client_that_authenticates_leaves_no_refusal(http, basic_client, ctx):
    since = last_event_id(ctx)
    assert http.post("/token", data=CC, auth=basic_client.auth).status_code == 200
    assert refused_events(ctx, since) == []
