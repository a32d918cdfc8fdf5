"""The contract's commands, through the real ``idp`` console script.

Every test has its own database (on the suite's back end), keys directory and working directory
(``HOME``, which ``run_idp`` runs in), so that tests never see each other's clients, people or ``.env``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import stat
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from select import select as select_fds
from typing import Any

import httpx
import pytest
import yaml
from alembic import command as alembic_commands
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, select, text, update
from starlette.testclient import TestClient

from idp.app import create_app
from idp.keys import KeyStore
from idp.migrate import HEAD, alembic_config, current_revision
from idp.storage import Base, User

from .conftest import PASSWORD, SECRET_KEY, TEST_ISSUER, free_port, make_settings, run_idp, start_server
from .flows import RegisteredClient, authorize_params, post_login, submit_login, tokens_for
from .flows import TestUser as Person

URLSAFE_SECRET = re.compile(r"^[A-Za-z0-9_-]{43,}$")
DEFAULT_SCOPE = "openid profile email phone offline_access"


@pytest.fixture
def env(own_database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "IDP_DATABASE_URL": own_database_url,
        "IDP_KEYS_DIR": str(tmp_path / "keys"),
        "IDP_SECRET_KEY": SECRET_KEY,
        "HOME": str(tmp_path),
    }


def ok(environ: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """Run a command that must succeed; what it printed, one JSON object a line."""
    result = run_idp(environ, *args)
    assert result.returncode == 0, (args, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines()]


def one(environ: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_idp(environ, *args)
    assert result.returncode == 0, (args, result.stderr)
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout
    parsed = json.loads(result.stdout)
    assert isinstance(parsed, dict)
    return parsed


def assert_refused(result: subprocess.CompletedProcess[str], *named: str) -> str:
    """Exit status 2, nothing on stdout, one line on stderr naming the problem."""
    case = f"{result.args[1:]}: {result.stdout!r} {result.stderr!r}"
    assert result.returncode == 2, case
    assert result.stdout == "", case
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, case
    assert "Traceback" not in result.stderr, case
    for word in named:
        assert word.lower() in lines[0].lower(), case
    return lines[0]


def refused(environ: dict[str, str], *args: str, named: Sequence[str] = ()) -> str:
    return assert_refused(run_idp(environ, *args), *named)


def run_all(jobs: Sequence[tuple[dict[str, str], Sequence[str]]]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands at once: each one is a fresh interpreter and they only read the database."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda job: run_idp(job[0], *job[1]), jobs))


def clients(environ: dict[str, str]) -> list[dict[str, Any]]:
    return ok(environ, "clients", "list")


def users(environ: dict[str, str]) -> list[dict[str, Any]]:
    return ok(environ, "users", "list")


def create_client(environ: dict[str, str], *extra: str) -> dict[str, Any]:
    return one(environ, "clients", "create", "--name", "App", "--redirect-uri", "https://rp.example/cb", *extra)


def untouched(database_url: str) -> bool:
    """No SQLite file was made, or no table in the PostgreSQL database made for the test."""
    if database_url.startswith("sqlite:///"):
        return not Path(database_url.removeprefix("sqlite:///")).exists()
    engine = create_engine(database_url)
    try:
        return inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


# --- clients -----------------------------------------------------------------------------------


def test_clients_create_prints_one_json_object_with_a_strong_secret(env):
    made = create_client(env)
    assert set(made) == {"client_id", "client_secret"}
    assert made["client_id"]
    assert URLSAFE_SECRET.match(made["client_secret"]), made["client_secret"]
    again = create_client(env)
    assert again["client_id"] != made["client_id"]
    assert again["client_secret"] != made["client_secret"]
    # Shown once: the list never prints a secret or its hash.
    listed = clients(env)
    assert made["client_secret"] not in json.dumps(listed)
    assert all(not any("secret" in key for key in entry) for entry in listed), listed


def test_clients_create_defaults(env):
    made = create_client(env)
    [listed] = clients(env)
    assert listed["client_id"] == made["client_id"]
    assert listed["name"] == "App"
    assert listed["redirect_uris"] == ["https://rp.example/cb"]
    assert listed["grant_types"] == ["authorization_code", "refresh_token"]
    assert listed["scope"] == DEFAULT_SCOPE
    assert listed["token_endpoint_auth_method"] == "client_secret_basic"
    assert listed["auth_method_pinned"] is False, "a secret in the Basic header or the body"
    assert listed["first_party"] is False
    assert listed["post_logout_redirect_uris"] == []
    assert listed["jwks_uri"] is None
    assert listed["web_origins"] == []


def test_public_and_private_key_jwt_clients_get_no_secret(env):
    public = create_client(env, "--token-endpoint-auth-method", "none")
    assert set(public) == {"client_id"}
    keyed = create_client(
        env, "--token-endpoint-auth-method", "private_key_jwt", "--jwks-uri", "https://rp.example/jwks.json"
    )
    assert set(keyed) == {"client_id"}
    post = create_client(env, "--token-endpoint-auth-method", "client_secret_post")
    assert URLSAFE_SECRET.match(post["client_secret"])

    listed = {c["client_id"]: c for c in clients(env)}
    assert listed[public["client_id"]]["token_endpoint_auth_method"] == "none"
    assert listed[keyed["client_id"]]["token_endpoint_auth_method"] == "private_key_jwt"
    assert listed[keyed["client_id"]]["jwks_uri"] == "https://rp.example/jwks.json"
    assert listed[post["client_id"]]["token_endpoint_auth_method"] == "client_secret_post"
    assert all(entry["auth_method_pinned"] for entry in listed.values()), "each named its method"


def test_clients_create_with_every_option(env):
    made = one(
        env,
        "clients",
        "create",
        "--name",
        "Shop",
        "--redirect-uri",
        "https://shop.example/cb",
        "--redirect-uri",
        "https://shop.example/cb2",
        "--redirect-uri",
        "http://127.0.0.1:8765/callback",
        "--post-logout-redirect-uri",
        "https://shop.example/bye",
        "--post-logout-redirect-uri",
        "https://shop.example/bye2",
        "--scope",
        "openid email",
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "client_credentials",
        "--token-endpoint-auth-method",
        "client_secret_post",
        "--first-party",
    )
    [listed] = clients(env)
    assert listed["client_id"] == made["client_id"]
    assert listed["name"] == "Shop"
    assert listed["redirect_uris"] == [
        "https://shop.example/cb",
        "https://shop.example/cb2",
        "http://127.0.0.1:8765/callback",
    ]
    assert listed["post_logout_redirect_uris"] == ["https://shop.example/bye", "https://shop.example/bye2"]
    assert listed["scope"] == "openid email"
    assert listed["grant_types"] == ["authorization_code", "client_credentials"]
    assert listed["token_endpoint_auth_method"] == "client_secret_post"
    assert listed["first_party"] is True


def test_https_issuer_allows_only_loopback_http_and_private_schemes(env):
    secure = env | {"IDP_ISSUER": "https://id.example"}
    for uri in ("http://127.0.0.1:9000/cb", "http://localhost/cb", "http://[::1]:9000/cb", "com.example.app:/cb"):
        assert "client_id" in create_client(secure, "--redirect-uri", uri), uri
    assert len(clients(secure)) == 4


def test_web_origins_are_kept_as_a_browser_sends_them(env):
    secure = env | {"IDP_ISSUER": "https://id.example"}
    create_client(
        secure,
        "--token-endpoint-auth-method",
        "none",
        *("--web-origin", "HTTPS://App.Example:443"),
        *("--web-origin", "https://app.example"),
        *("--web-origin", "https://app.example:8443"),
        *("--web-origin", "http://localhost:5173"),
        *("--web-origin", "http://127.0.0.1:80"),
        *("--web-origin", "http://[0:0::1]:3000"),
        *("--web-origin", "https://xn--bcher-kva.example"),
    )
    [listed] = clients(secure)
    assert listed["web_origins"] == [
        "https://app.example",
        "https://app.example:8443",
        "http://localhost:5173",
        "http://127.0.0.1",
        "http://[::1]:3000",
        "https://xn--bcher-kva.example",
    ]


def test_clients_create_refuses_a_bad_web_origin_and_writes_nothing(env):
    ok(env, "migrate")
    secure = env | {"IDP_ISSUER": "https://id.example"}
    bad = [
        "https://app.example/",
        "https://app.example/spa",
        "https://app.example?x=1",
        "https://app.example#top",
        "https://someone@app.example",
        "http://app.example",
        "ftp://app.example",
        "app.example",
        "//app.example",
        "https://",
        "https://*.example",
        "https://app..example",
        "https://app.example:0",
        "https://app.example:65536",
        "https://app.example:https",
        "https://bücher.example",
        "https://app .example",
        "null",
        "*",
        "https://" + "a" * 300 + ".example",
    ]
    good = ["--name", "SPA", "--redirect-uri", "https://app.example/cb", "--web-origin", "https://ok.example"]
    results = run_all([(secure, ["clients", "create", *good, "--web-origin", origin]) for origin in bad])
    for origin, result in zip(bad, results, strict=True):
        line = assert_refused(result, "--web-origin")
        assert origin[:50] in line or "longer than" in line, line
    assert clients(secure) == []


def test_clients_delete(env):
    kept = create_client(env)
    gone = create_client(env)
    assert len(clients(env)) == 2
    ok(env, "clients", "delete", gone["client_id"])
    assert [c["client_id"] for c in clients(env)] == [kept["client_id"]]
    refused(env, "clients", "delete", gone["client_id"], named=[gone["client_id"]])
    refused(env, "clients", "delete", "no-such-client", named=["no-such-client"])
    assert [c["client_id"] for c in clients(env)] == [kept["client_id"]]


def test_clients_create_refuses_bad_input_and_writes_nothing(env):
    ok(env, "migrate")
    https = env | {"IDP_ISSUER": "https://id.example"}
    good = ["--name", "App", "--redirect-uri", "https://rp.example/cb"]
    cases: list[tuple[dict[str, str], list[str], list[str]]] = [
        (env, ["--name", "App", "--redirect-uri", "https://rp.example/cb#frag"], ["--redirect-uri", "fragment"]),
        (env, ["--name", "App", "--redirect-uri", "/cb"], ["--redirect-uri"]),
        (env, ["--name", "App", "--redirect-uri", "rp.example/cb"], ["--redirect-uri"]),
        (https, ["--name", "App", "--redirect-uri", "http://rp.example/cb"], ["--redirect-uri"]),
        (https, [*good, "--post-logout-redirect-uri", "http://rp.example/bye"], ["--post-logout-redirect-uri"]),
        (env, [*good, "--post-logout-redirect-uri", "https://rp.example/bye#x"], ["--post-logout-redirect-uri"]),
        (
            env,
            [*good, "--redirect-uri", "https://rp.example/ok", "--redirect-uri", "javascript:alert(1)"],
            ["--redirect-uri"],
        ),
        (env, [*good, "--grant-type", "implicit"], ["--grant-type", "implicit"]),
        (env, [*good, "--grant-type", "password"], ["--grant-type"]),
        (env, [*good, "--token-endpoint-auth-method", "client_secret_jwt"], ["--token-endpoint-auth-method"]),
        (env, [*good, "--token-endpoint-auth-method", "private_key_jwt"], ["--jwks-uri"]),
        (
            env,
            [*good, "--token-endpoint-auth-method", "none", "--grant-type", "client_credentials"],
            ["client_credentials"],
        ),
        (env, ["--redirect-uri", "https://rp.example/cb"], ["--name"]),
        (env, ["--name", "   ", "--redirect-uri", "https://rp.example/cb"], ["--name"]),
        (env, ["--name", "App"], ["--redirect-uri"]),
        (env, [*good, "--jwks-uri", "https://rp.example/jwks.json"], ["--jwks-uri"]),
    ]
    results = run_all([(environ, ["clients", "create", *args]) for environ, args, _ in cases])
    for (_, _, named), result in zip(cases, results, strict=True):
        assert_refused(result, *named)
    assert clients(env) == []


# --- users -------------------------------------------------------------------------------------


def test_users_create_prints_its_id_and_list_shows_it(env):
    made = one(env, "users", "create", "--email", "Ada@Example.com", "--password", PASSWORD, "--name", "Ada")
    assert set(made) == {"id"}
    [listed] = users(env)
    assert listed["id"] == made["id"]
    assert listed["email"] == "ada@example.com"
    assert listed["name"] == "Ada"
    assert listed["email_verified"] is False
    assert listed["phone"] is None
    assert listed["disabled"] is False
    assert listed["locked"] is False
    assert PASSWORD not in json.dumps(listed)
    assert "argon2" not in json.dumps(listed)


def test_users_create_verified_with_phone_in_e164(env):
    made = one(env, "users", "create", "--email", "grace@example.com", "--phone", "+1 (415) 555-0100", "--verified")
    plain = one(env, "users", "create", "--email", "alan@example.com", "--phone", "+14155550101")
    listed = {u["id"]: u for u in users(env)}
    assert listed[made["id"]]["phone"] == "+14155550100"
    assert listed[made["id"]]["email_verified"] is True
    assert listed[made["id"]]["phone_verified"] is True
    assert listed[plain["id"]]["phone"] == "+14155550101"
    assert listed[plain["id"]]["email_verified"] is False
    assert listed[plain["id"]]["phone_verified"] is False


def test_users_create_reads_national_numbers_in_the_default_region(env):
    iran = env | {"IDP_PHONE_DEFAULT_REGION": "IR"}
    made = one(iran, "users", "create", "--email", "sara@example.com", "--phone", "09121234567")
    [listed] = users(iran)
    assert listed["id"] == made["id"]
    assert listed["phone"] == "+989121234567"


def test_users_create_refuses_bad_input_and_writes_nothing(env):
    seeded = one(env, "users", "create", "--email", "taken@example.com", "--phone", "+14155550100")
    cases: list[tuple[list[str], list[str]]] = [
        (["--email", "not-an-email"], ["email"]),
        (["--email", "a@b"], ["email"]),
        (["--email", "TAKEN@example.com"], ["email"]),
        (["--email", "new1@example.com", "--phone", "12345"], ["phone"]),
        (["--email", "new2@example.com", "--phone", "+1 415 555 0100"], ["phone"]),
        (["--email", "new3@example.com", "--password", "seven77"], ["password", "8"]),
        (["--email", "new4@example.com", "--password", "x" * 257], ["password", "256"]),
        (["--password", PASSWORD], ["--email"]),
        (["--email", "new5@example.com", "--name", "x" * 201], ["name", "200"]),
        (["--email", "new6@example.com", "--name", "Eve\x1b[2J"], ["name", "control characters"]),
    ]
    results = run_all([(env, ["users", "create", *args]) for args, _ in cases])
    for (_, named), result in zip(cases, results, strict=True):
        assert_refused(result, *named)
    assert [u["id"] for u in users(env)] == [seeded["id"]]


def test_password_length_limits_are_inclusive(env):
    one(env, "users", "create", "--email", "eight@example.com", "--password", "8" * 8)
    one(env, "users", "create", "--email", "long@example.com", "--password", "x" * 256)
    assert len(users(env)) == 2


def test_unknown_commands_and_ids_are_refused(env):
    ok(env, "migrate")
    cases: list[tuple[list[str], list[str]]] = [
        (["frobnicate"], ["frobnicate"]),
        (["clients", "frobnicate"], ["frobnicate"]),
        (["keys", "shred"], ["shred"]),
        ([], []),
        (["clients"], []),
        (["keys", "retire"], ["kid"]),
        (["keys", "retire", "no-such-kid"], ["no-such-kid"]),
        (["users", "unlock", "no-such-user"], ["no-such-user"]),
        (["users", "disable", "no-such-user"], ["no-such-user"]),
        (["clients", "delete", "no-such-client"], ["no-such-client"]),
        (["keys", "retire", "-Xno-such-kid"], ["no key with kid -Xno-such-kid"]),
        (["keys", "retire", "--no-such-kid", "--force"], ["no key with kid --no-such-kid"]),
        (["clients", "delete", "-no-such-client"], ["-no-such-client"]),
        (["users", "unlock", "-no-such-user"], ["-no-such-user"]),
        (["keys", "list", "--shred"], ["--shred"]),
        (["serve", "--port", "http"], ["port"]),
        (["serve", "--workers", "0"], ["workers"]),
    ]
    results = run_all([(env, args) for args, _ in cases])
    for (_, named), result in zip(cases, results, strict=True):
        assert_refused(result, *named)
    assert clients(env) == [] and users(env) == []


@pytest.fixture
def cli_app(env: dict[str, str]) -> Iterator[TestClient]:
    """The provider in-process on the CLI test's own database and keys."""
    KeyStore(Path(env["IDP_KEYS_DIR"])).ensure()
    app = create_app(make_settings(env))
    with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False) as http:
        yield http
    app.state.ctx.close()


def _browser(app: TestClient) -> TestClient:
    return TestClient(app.app, base_url=TEST_ISSUER, follow_redirects=False)


def _sign_in_refused(http: TestClient, client: RegisteredClient, user: Person) -> None:
    response = http.get("/authorize", params=authorize_params(client, "x" * 43))
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/login") or location.startswith(TEST_ISSUER + "/login"), location
    refused_login = submit_login(http, location, user.email, PASSWORD)
    assert refused_login.status_code == 400
    assert 'role="alert"' in refused_login.text


def test_cli_made_client_and_user_sign_in_and_disable_stops_them(env, cli_app):
    made = create_client(env, "--first-party")
    client = RegisteredClient(made["client_id"], made["client_secret"], "https://rp.example/cb")
    person = one(env, "users", "create", "--email", "lin@example.com", "--password", PASSWORD, "--verified")
    user = Person(person["id"], "lin@example.com", PASSWORD)

    # The printed secret authenticates at the token endpoint; a first-party client asks no consent.
    tokens = tokens_for(cli_app, client, user)
    assert tokens["refresh_token"]
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert cli_app.get("/userinfo", headers=bearer).status_code == 200

    assert one(env, "users", "disable", user.id) == {"id": user.id, "disabled": True}
    [listed] = users(env)
    assert listed["disabled"] is True

    # The single sign-on session ended: the same browser is asked to sign in again, and cannot.
    _sign_in_refused(cli_app, client, user)
    with _browser(cli_app) as fresh:
        _sign_in_refused(fresh, client, user)
    assert cli_app.get("/userinfo", headers=bearer).status_code == 401
    refreshed = cli_app.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=client.auth
    )
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"


def test_users_unlock_ends_a_lockout(env, cli_app):
    made = create_client(env, "--first-party")
    client = RegisteredClient(made["client_id"], made["client_secret"], "https://rp.example/cb")
    person = one(env, "users", "create", "--email", "kim@example.com", "--password", PASSWORD, "--verified")
    user = Person(person["id"], "kim@example.com", PASSWORD)
    engine = create_engine(env["IDP_DATABASE_URL"])
    with engine.begin() as connection:
        connection.execute(
            update(User).where(User.id == user.id).values(failed_sign_ins=0, locked_until=int(time.time()) + 3600)
        )
    engine.dispose()
    assert users(env)[0]["locked"] is True
    with _browser(cli_app) as locked_out:
        _sign_in_refused(locked_out, client, user)

    assert one(env, "users", "unlock", user.id) == {"id": user.id, "unlocked": True}
    assert users(env)[0]["locked"] is False
    with _browser(cli_app) as browser:
        assert tokens_for(browser, client, user)["id_token"]


def _signs_in(app: TestClient, email: str, password: str) -> bool:
    with _browser(app) as browser:
        response = post_login(browser, email, password)
        return response.status_code == 303 and response.headers["location"] == "/account"


def _password_hash(env: dict[str, str], user_id: str) -> str | None:
    engine = create_engine(env["IDP_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return connection.execute(select(User.password_hash).where(User.id == user_id)).scalar_one()
    finally:
        engine.dispose()


def test_users_create_reads_the_password_from_a_pipe_with_password_dash(env, cli_app):
    """``--password -`` keeps the password out of argv, ``ps`` and the shell's history."""
    made = run_idp(
        env,
        *("users", "create", "--email", "pipe@example.com", "--password", "-", "--verified"),
        input=f"{PASSWORD}\nthe second line is not read\n",
    )
    assert made.returncode == 0, made.stderr
    assert _signs_in(cli_app, "pipe@example.com", PASSWORD)


def test_users_create_reads_a_last_line_without_a_newline(env, cli_app):
    made = run_idp(env, "users", "create", "--email", "nl@example.com", "--password", "-", "--verified", input=PASSWORD)
    assert made.returncode == 0, made.stderr
    assert _signs_in(cli_app, "nl@example.com", PASSWORD)


@pytest.mark.parametrize(
    ("given", "named"),
    [("", ["standard input"]), ("\n", ["standard input"]), ("short\n", ["password", "8"])],
)
def test_users_create_refuses_a_missing_or_bad_password_on_standard_input(env, given, named):
    result = run_idp(env, "users", "create", "--email", "none@example.com", "--password", "-", input=given)
    assert_refused(result, *named)
    assert users(env) == []


def test_users_create_without_password_still_makes_a_passwordless_account(env):
    """Standard input is read only when ``--password -`` asks for it: scripts that pipe something
    else, or nothing, into ``users create`` keep making passwordless accounts."""
    made = run_idp(env, "users", "create", "--email", "free@example.com", input=f"{PASSWORD}\n")
    assert made.returncode == 0, made.stderr
    assert _password_hash(env, json.loads(made.stdout)["id"]) is None


def _run_on_a_terminal(environ: dict[str, str], args: Sequence[str], answers: Sequence[str]) -> tuple[int, str, str]:
    """Run ``idp`` with a pseudo-terminal as its controlling terminal and standard input, typing
    each answer after the next prompt; its exit status, what the terminal showed, and its stderr."""
    controller, terminal = os.openpty()

    def take_the_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")} | environ
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "idp"), *args],
        env=env,
        cwd=env["HOME"],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=take_the_terminal,
    )
    os.close(terminal)
    shown = b""
    try:
        for answer in answers:
            prompts = shown.count(b":")
            deadline = time.monotonic() + 30
            while shown.count(b":") == prompts:
                assert time.monotonic() < deadline and process.poll() is None, (shown, process.stderr)
                readable, _, _ = select_fds([controller], [], [], 0.2)
                if readable:
                    shown += os.read(controller, 1024)
            os.write(controller, answer.encode() + b"\n")
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    assert stdout.count(b"\n") <= 1
    return process.returncode, shown.decode(errors="replace"), stderr.decode()


def test_users_create_prompts_twice_on_a_terminal(env, cli_app):
    args = ["users", "create", "--email", "tty@example.com", "--password", "-", "--verified"]
    status, shown, stderr = _run_on_a_terminal(env, args, [PASSWORD, PASSWORD])
    assert status == 0, stderr
    assert shown.count("assword") == 2 and PASSWORD not in shown, "the prompts show, the typing does not"
    assert _signs_in(cli_app, "tty@example.com", PASSWORD)


def test_users_create_refuses_two_different_passwords_on_a_terminal(env):
    args = ["users", "create", "--email", "typo@example.com", "--password", "-"]
    status, _, stderr = _run_on_a_terminal(env, args, [PASSWORD, PASSWORD + "!"])
    assert status == 2
    assert len(stderr.strip().splitlines()) == 1 and "match" in stderr, stderr
    assert users(env) == []


# --- settings ----------------------------------------------------------------------------------


BAD_SETTINGS = [
    ("IDP_ACCESS_TOKEN_TTL", "abc"),
    ("IDP_RATE_LIMITING", "maybe"),
    ("IDP_EMAIL_BACKEND", "pigeon"),
    ("IDP_ISSUER", "not-a-url"),
    ("IDP_SMS_BACKEND", "twilio"),
    ("IDP_PHONE_DEFAULT_REGION", "XX"),
    ("IDP_DATABASE_URL", "mysql://x"),
    ("IDP_TRUSTED_PROXIES", "nonsense"),
]


def _named_variable(name: str) -> str:
    """The variable the message must name: a Twilio backend without Twilio settings names those."""
    return "IDP_TWILIO" if name == "IDP_SMS_BACKEND" else name


def test_a_bad_setting_stops_every_command_with_one_line(env, tmp_path):
    commands = [
        ["clients", "list"],
        ["users", "create", "--email", "x@example.com"],
        ["keys", "rotate"],
        ["migrate"],
        ["clients", "create", "--name", "App", "--redirect-uri", "https://rp.example/cb"],
        ["keys", "list"],
        ["users", "list"],
        ["clients", "delete", "some-id"],
    ]
    jobs = [(name, env | {name: value}, command) for (name, value), command in zip(BAD_SETTINGS, commands, strict=True)]
    results = run_all([(environ, command) for _, environ, command in jobs])
    for (name, _, command), result in zip(jobs, results, strict=True):
        line = assert_refused(result)
        assert line.removeprefix("idp: ").startswith(_named_variable(name)), (command, line)
    # Nothing was written: no database, no keys.
    assert untouched(env["IDP_DATABASE_URL"])
    assert not (tmp_path / "keys").exists()


def test_a_bad_setting_in_dotenv_of_the_working_directory(env, tmp_path):
    (tmp_path / ".env").write_text("IDP_ACCESS_TOKEN_TTL=soon\n")
    line = refused(env, "clients", "list")
    assert line.removeprefix("idp: ").startswith("IDP_ACCESS_TOKEN_TTL")
    # The environment wins over the file.
    assert ok(env | {"IDP_ACCESS_TOKEN_TTL": "600"}, "clients", "list") == []


@pytest.mark.parametrize(("name", "value"), [BAD_SETTINGS[0], BAD_SETTINGS[4], BAD_SETTINGS[-1]])
def test_serve_with_a_bad_setting_exits_at_once(env, tmp_path, name, value):
    started = time.monotonic()
    result = run_idp(env | {name: value}, "serve", "--port", str(free_port()))
    assert time.monotonic() - started < 20
    line = assert_refused(result)
    assert line.removeprefix("idp: ").startswith(_named_variable(name)), line
    assert untouched(env["IDP_DATABASE_URL"])
    assert not (tmp_path / "keys").exists()


def test_serve_with_the_shipped_placeholder_secret_key_exits_at_once(env, tmp_path):
    """As in the pod: the Secret's ``.env`` in the working directory, the example left in it."""
    secret = yaml.safe_load_all((Path(__file__).parent.parent / "deploy/kubernetes/secret.yaml").read_text())
    placeholder = next(document for document in secret if document["metadata"]["name"] == "idp-secrets")
    (tmp_path / ".env").write_text(placeholder["stringData"][".env"])
    environ = {name: value for name, value in env.items() if name != "IDP_SECRET_KEY"}
    result = run_idp(environ, "serve", "--port", str(free_port()))
    line = assert_refused(result)
    assert line.removeprefix("idp: ").startswith("IDP_SECRET_KEY"), line
    assert untouched(env["IDP_DATABASE_URL"])
    assert not (tmp_path / "keys").exists()


# --- migrate and serve -------------------------------------------------------------------------


def test_migrate_creates_the_tables_at_head(env, tmp_path):
    result = run_idp(env, "migrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    url = env["IDP_DATABASE_URL"]
    engine = create_engine(url)
    try:
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    assert current == ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert run_idp(env, "migrate").returncode == 0  # idempotent


def test_replicas_migrating_an_empty_database_at_once_create_it_once(env):
    """Several replicas run ``idp serve``, which upgrades first, at the same moment: one creates
    the schema, and the others wait for it, then find it at head."""
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run_idp(env, "migrate"), range(4)))
    assert [result.returncode for result in results] == [0] * 4, [result.stderr for result in results]
    url = env["IDP_DATABASE_URL"]
    assert current_revision(url) == HEAD
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            counters = connection.execute(text("SELECT topic, value FROM generations ORDER BY topic")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in counters] == [("clients", 0), ("people", 0), ("revocations", 0)]


def test_the_known_head_is_alembics_head(env):
    assert HEAD == ScriptDirectory.from_config(alembic_config(env["IDP_DATABASE_URL"])).get_current_head()


def _imports_after(code: str, environ: dict[str, str]) -> set[str]:
    """The modules a fresh interpreter has imported once ``code`` has run."""
    probe = code + "\nimport sys\nprint(' '.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=os.environ | environ, capture_output=True, text=True, timeout=60, check=True
    )
    return set(result.stdout.split())


def test_alembic_is_loaded_only_to_migrate_a_database_from_an_older_revision(env):
    """Start-up time: an empty database is created at head, and one at head is left as it is,
    without importing Alembic; only a database at an older revision is migrated by it."""
    url = env["IDP_DATABASE_URL"]
    assert current_revision(url) is None
    assert "alembic" not in _imports_after(f"from idp.migrate import upgrade; upgrade({url!r})", env)
    assert current_revision(url) == HEAD
    assert "alembic" not in _imports_after(f"from idp.migrate import upgrade; upgrade({url!r})", env)

    alembic_commands.downgrade(alembic_config(url), "-1")
    assert current_revision(url) not in (None, HEAD)
    assert "alembic" in _imports_after(f"from idp.migrate import upgrade; upgrade({url!r})", env)
    assert current_revision(url) == HEAD


def test_idp_serve_does_not_load_the_other_commands(env):
    """Start-up time: choosing ``serve`` imports neither the account layer nor the web application."""
    loaded = _imports_after("from idp.cli import chosen_group; chosen_group(['serve'])", env)
    assert "idp.cli.serve" in loaded
    assert not {"idp.cli.users", "idp.accounts.users", "idp.app", "idp.oauth.clients", "argon2", "jinja2"} & loaded


def test_without_a_redis_url_the_redis_library_is_not_loaded(env):
    """A worker on SQLite and the in-process store leaves the Redis client out of its memory."""
    build = "from idp.app import create_app; create_app().state.ctx.rate_limiter"
    assert "redis" not in _imports_after(build, env)
    assert "redis" in _imports_after(build, env | {"IDP_REDIS_URL": "redis://127.0.0.1:1/0"})


def _serve_bare(directory: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``idp serve`` with no IDP_ variable at all, in an empty working directory."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")} | {"HOME": str(directory)}
    with log.open("wb") as handle:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "idp"), "serve", "--port", str(port)],
            env=environ,
            cwd=directory,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"idp serve never became ready: {log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_serve_on_a_bare_machine_makes_what_it_needs(tmp_path):
    workdir = tmp_path / "bare"
    workdir.mkdir()
    port = free_port()
    log = tmp_path / "bare.log"
    process = _serve_bare(workdir, port, log)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(process, url, log)
        assert httpx.get(url + "/readyz").json()["status"] == "ready"
        assert (workdir / "idp.db").is_file()
        keys = list((workdir / "keys").glob("*.pem"))
        assert len(keys) == 1
        assert stat.S_IMODE(keys[0].stat().st_mode) == 0o600
        secret = workdir / "keys" / "secret.key"
        assert secret.is_file()
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(secret.read_text().strip()) >= 43
        assert len(httpx.get(url + "/jwks.json").json()["keys"]) == 1
        assert httpx.get(url + "/.well-known/openid-configuration").json()["issuer"] == "http://127.0.0.1:8000"
    finally:
        _stop(process)
    assert process.returncode is not None


def test_serve_with_two_workers(own_database_url, tmp_path):
    environ = {
        "IDP_DATABASE_URL": own_database_url,
        "IDP_KEYS_DIR": str(tmp_path / "keys"),
        "HOME": str(tmp_path),
    }
    made = create_client(environ, "--first-party")
    client = RegisteredClient(made["client_id"], made["client_secret"], "https://rp.example/cb")
    person = one(environ, "users", "create", "--email", "wu@example.com", "--password", PASSWORD, "--verified")
    user = Person(person["id"], "wu@example.com", PASSWORD)

    log = tmp_path / "workers.log"
    process, url = start_server(environ, log, "--workers", "2")
    try:
        for _ in range(20):
            response = httpx.get(url + "/healthz", timeout=5)
            assert response.status_code == 200
            assert response.json() == {"status": "ok"}
        # Full sign-ins hop between workers: cookies, CSRF tokens and codes must work across them.
        for _ in range(4):
            with httpx.Client(base_url=url, follow_redirects=False, timeout=10) as web:
                tokens = tokens_for(web, client, user)
                bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
                assert web.get("/userinfo", headers=bearer).json()["sub"] == user.id
        workers = set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))
        assert len(workers) == 2, log.read_text()
    finally:
        _stop(process)
    assert stat.S_IMODE((tmp_path / "keys" / "secret.key").stat().st_mode) == 0o600
