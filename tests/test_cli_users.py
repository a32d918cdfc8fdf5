"""An operator's commands for people: search, update, enable, reset-link, sessions and grants; each
change audited with the operating-system account that ran it, and bad input written nowhere."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session

from idp.storage import User

from .conftest import PASSWORD, run_idp
from .flows import RegisteredClient, hidden_fields, post_login, tokens_for
from .test_cli import Person, assert_refused, cli_app, create_client, env, ok, one, users  # noqa: F401 - fixtures

NEW_PASSWORD = "an entirely new passphrase 7"


def person(env: dict[str, str], email: str) -> Person:  # noqa: F811
    made = one(env, "users", "create", "--email", email, "--password", PASSWORD, "--verified")
    return Person(made["id"], email, PASSWORD)


def first_party(env: dict[str, str]) -> RegisteredClient:  # noqa: F811
    made = create_client(env, "--first-party")
    return RegisteredClient(made["client_id"], made["client_secret"], "https://rp.example/cb")


def test_search_finds_people_by_what_they_are_known_by(env):  # noqa: F811
    ada = person(env, "ada.search@example.com")
    one(env, "users", "update", ada.id, "--username", "countess", "--phone", "+14155550199")
    person(env, "grace.search@example.com")
    for text in ("ada.search", "COUNTESS", "5550199", ada.id):
        assert [found["id"] for found in ok(env, "users", "search", text)] == [ada.id], text
    assert len(ok(env, "users", "search", ".search@")) == 2
    assert ok(env, "users", "search", "nobody-like-this") == []


def test_update_changes_what_it_names_and_refuses_what_is_anothers(env):  # noqa: F811
    ada, grace = person(env, "ada.update@example.com"), person(env, "grace.update@example.com")
    updated = one(
        env,
        "users",
        "update",
        ada.id,
        *("--email", "Ada.New@Example.com", "--no-email-verified", "--given-name", "Ada", "--username", "ada"),
        *("--group", "staff", "--group", "admins"),
    )
    assert updated["email"] == "ada.new@example.com" and updated["email_verified"] is False
    assert updated["given_name"] == "Ada" and updated["preferred_username"] == "ada"
    assert one(env, "users", "show", ada.id)["profile"]["groups"] == ["admins", "staff"]
    before = one(env, "users", "show", grace.id)["profile"]
    for args, option in [
        (("--email", "ada.new@example.com"), "--email"),
        (("--username", "ada"), "--username"),
        (("--username", "ada\tlovelace"), "--username"),
        (("--email", "not an address"), "--email"),
        (("--phone", "12"), "--phone"),
        (("--name", "x" * 201), "--name"),
        ((), "users update"),
    ]:
        refused = run_idp(env, "users", "update", grace.id, *args)
        assert refused.returncode == 2 and refused.stdout == "", refused
        [line] = refused.stderr.strip().splitlines()
        assert option in line, line
    assert one(env, "users", "show", grace.id)["profile"] == before, "a refusal writes nothing"


def test_update_sets_the_picture_and_the_address_and_refuses_bad_ones(env):  # noqa: F811
    ada = person(env, "ada.picture@example.com")
    address = {"street_address": "1 Main St", "locality": "Berlin", "country": "Germany"}
    updated = one(
        env,
        "users",
        "update",
        ada.id,
        *("--picture", "https://pictures.example/ada.png", "--address", json.dumps(address)),
    )
    assert updated["picture"] == "https://pictures.example/ada.png"
    assert updated["address"] == {"formatted": "1 Main St\nBerlin\nGermany", **address}
    shown = one(env, "users", "show", ada.id)["profile"]
    assert shown["picture"] == updated["picture"] and shown["address"] == updated["address"]
    for args, says in [
        (("--picture", "http://pictures.example/ada.png"), "--picture: not https"),
        (("--picture", "javascript:alert(1)"), "--picture: not a url"),
        (("--address", "Berlin"), "--address: a JSON object"),
        (("--address", '"Berlin"'), "--address: not an object, parts formatted, street_address, locality"),
        (("--address", '{"planet": "Mars"}'), "--address: not a part, part planet"),
        (("--address", json.dumps({"postal_code": "1" * 21})), "--address: too long, part postal_code, max length 20"),
    ]:
        refused = run_idp(env, "users", "update", ada.id, *args)
        assert refused.returncode == 2 and refused.stdout == "", refused
        [line] = refused.stderr.strip().splitlines()
        assert says in line, line
    assert one(env, "users", "show", ada.id)["profile"] == shown, "a refusal writes nothing"
    cleared = one(env, "users", "update", ada.id, "--picture", "", "--address", "{}")
    assert (cleared["picture"], cleared["address"]) == (None, None)


def test_update_sets_the_language_and_the_time_zone_and_refuses_malformed_ones(env):  # noqa: F811
    ada = person(env, "ada.zone@example.com")
    updated = one(env, "users", "update", ada.id, "--locale", "fa", "--zoneinfo", "Asia/Tehran")
    assert (updated["locale"], updated["zoneinfo"]) == ("fa", "Asia/Tehran")
    shown = one(env, "users", "show", ada.id)["profile"]
    assert (shown["locale"], shown["zoneinfo"]) == ("fa", "Asia/Tehran")
    for args, says in [
        (("--zoneinfo", "Mars/Olympus"), "--zoneinfo: not an IANA time zone"),
        (("--zoneinfo", "europe/berlin"), "--zoneinfo: not an IANA time zone"),
        (("--locale", "fa_IR"), "--locale: a BCP 47 language tag (fa-IR)"),
        (("--locale", "en fa"), "--locale: a BCP 47 language tag (fa-IR)"),
        (("--username", "ada", "--zoneinfo", "Mars/Olympus"), "--zoneinfo: not an IANA time zone"),
    ]:
        line = assert_refused(run_idp(env, "users", "update", ada.id, *args))
        assert says in line, line
    assert one(env, "users", "show", ada.id)["profile"] == shown, "a refusal writes nothing, not even the username"
    assert one(env, "users", "update", ada.id, "--locale", "de-AT")["locale"] == "de-AT", "any BCP 47 tag"
    cleared = one(env, "users", "update", ada.id, "--locale", "", "--zoneinfo", "")
    assert (cleared["locale"], cleared["zoneinfo"]) == (None, None)


def test_create_sets_the_whole_profile(env):  # noqa: F811
    address = {"street_address": "1 Main St", "locality": "Berlin", "country": "Germany"}
    made = one(
        env,
        "users",
        "create",
        *("--email", "ada.whole@example.com", "--given-name", "Ada", "--family-name", "Lovelace"),
        *("--username", "countess", "--locale", "fa", "--zoneinfo", "Europe/London"),
        *("--picture", "https://pictures.example/ada.png", "--address", json.dumps(address)),
        *("--group", "staff", "--group", "admins"),
    )
    assert set(made) == {"id"}, "create prints the id alone, as before"
    shown = one(env, "users", "show", made["id"])["profile"]
    assert (shown["given_name"], shown["family_name"], shown["preferred_username"]) == ("Ada", "Lovelace", "countess")
    assert (shown["locale"], shown["zoneinfo"]) == ("fa", "Europe/London")
    assert shown["picture"] == "https://pictures.example/ada.png"
    assert shown["address"] == {"formatted": "1 Main St\nBerlin\nGermany", **address}
    assert shown["groups"] == ["admins", "staff"]
    [event] = [json.loads(line) for line in run_idp(env, "audit", "--event", "admin_action").stdout.splitlines()]
    assert "zoneinfo" in event["detail"]["options"] and "Europe/London" not in json.dumps(event)


def test_create_refuses_a_bad_profile_and_makes_no_account(env):  # noqa: F811
    seeded = one(env, "users", "create", "--email", "grace.taken@example.com", "--username", "grace")
    for args, says in [
        (("--zoneinfo", "Mars/Olympus"), "--zoneinfo: not an IANA time zone"),
        (("--locale", "fa_IR"), "--locale: a BCP 47 language tag (fa-IR) of at most 16 characters"),
        (("--locale", "de-" + "x" * 14), "--locale: a BCP 47 language tag (fa-IR) of at most 16 characters"),
        (("--picture", "http://pictures.example/ada.png"), "--picture: not https"),
        (("--picture", "javascript:alert(1)"), "--picture: not a url"),
        (("--address", "Berlin"), "--address: a JSON object"),
        (("--address", '{"planet": "Mars"}'), "--address: not a part, part planet"),
        (("--username", "grace"), "--username: grace is already another person's"),
        (("--username", "ada\tlovelace"), "--username: at most 150 printable characters"),
        (("--given-name", "x" * 201), "--given-name: at most 200 characters"),
        (("--group", "x" * 151), "--group: at most 150 printable characters"),
    ]:
        line = assert_refused(run_idp(env, "users", "create", "--email", "ada.bad@example.com", *args))
        assert says in line, line
    assert [u["id"] for u in users(env)] == [seeded["id"]], "a refusal leaves no account behind"


def test_enable_lets_a_disabled_person_sign_in_again(env, cli_app):  # noqa: F811
    ada, app = person(env, "ada.enable@example.com"), first_party(env)
    one(env, "users", "disable", ada.id)
    assert post_login(cli_app, ada.email, PASSWORD).status_code == 400
    assert one(env, "users", "enable", ada.id) == {"id": ada.id, "enabled": True}
    assert tokens_for(cli_app, app, ada)["access_token"]


def test_a_reset_link_sets_a_new_password_once(env, cli_app):  # noqa: F811
    ada = person(env, "ada.reset@example.com")
    link = urlsplit(one(env, "users", "reset-link", ada.id)["reset_link"])
    assert link.path == "/password/reset"
    page = cli_app.get(f"{link.path}?{link.query}")
    assert page.status_code == 200, page.text
    form = {**hidden_fields(page.text), "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    assert cli_app.post("/password/reset", data=form).status_code == 200
    assert post_login(cli_app, ada.email, PASSWORD).status_code == 400
    assert post_login(cli_app, ada.email, NEW_PASSWORD).status_code == 303
    spent = cli_app.get(f"{link.path}?{link.query}")
    assert spent.status_code == 400 and 'name="password"' not in spent.text, "the link works once"
    phoneless = one(env, "users", "create", "--phone", "+14155550142")
    refused = run_idp(env, "users", "reset-link", phoneless["id"])
    assert refused.returncode == 2 and "no email address" in refused.stderr


def test_sessions_and_grants_are_listed_and_ended(env, cli_app):  # noqa: F811
    ada, app = person(env, "ada.sessions@example.com"), first_party(env)
    tokens = tokens_for(cli_app, app, ada, scope="openid offline_access")
    [session] = ok(env, "users", "sessions", ada.id)
    assert session["ip"] and session["user_agent"]
    [grant] = ok(env, "users", "grants", ada.id)
    assert grant["client_id"] == app.client_id and grant["revoked_at"] is None

    assert one(env, "users", "grants", ada.id, "--revoke", grant["id"]) == {"id": ada.id, "revoked": 1}
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert cli_app.post("/token", data=refresh, auth=app.auth).status_code == 400
    assert cli_app.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code == 401
    again = run_idp(env, "users", "grants", ada.id, "--revoke", grant["id"])
    assert again.returncode == 2 and "no grant" in again.stderr

    assert one(env, "users", "sessions", ada.id, "--end-all") == {"id": ada.id, "ended": 1}
    assert ok(env, "users", "sessions", ada.id) == []
    assert cli_app.get("/account").status_code == 303, "the browser is signed out"
    unknown = run_idp(env, "users", "sessions", ada.id, "--end", "nope")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1


def test_operator_changes_are_audited_with_who_ran_them(env):  # noqa: F811
    ada = person(env, "ada.audit@example.com")
    one(env, "users", "update", ada.id, "--name", "Ada")
    one(env, "users", "disable", ada.id)
    one(env, "users", "enable", ada.id)
    link = one(env, "users", "reset-link", ada.id)["reset_link"]
    printed = run_idp(env, "audit", "--user", ada.id, "--event", "admin_action").stdout
    events = [json.loads(line) for line in printed.splitlines()]
    assert [e["detail"]["command"] for e in events] == [
        "users create",
        "users update",
        "users disable",
        "users enable",
        "users reset-link",
    ]
    assert all(e["user_agent"].startswith("idp command line, operator ") for e in events)
    assert link.split("token=")[1] not in printed


def test_a_username_taken_while_update_runs_is_one_line_and_changes_nothing(env):  # noqa: F811
    """The check that a username is free and the write that takes it are two statements: another
    transaction may take it in between (here it holds it uncommitted, so the command's write
    waits for it, then finds it taken). The command still ends in one line, writing nothing."""
    ada, grace = person(env, "ada.race@example.com"), person(env, "grace.race@example.com")
    engine = create_engine(env["IDP_DATABASE_URL"])
    try:
        with ThreadPoolExecutor(1) as pool, Session(engine) as db:
            with db.begin():
                db.execute(update(User).where(User.id == ada.id).values(preferred_username="countess"))
                racing = pool.submit(
                    run_idp, env, "users", "update", grace.id, "--username", "countess", "--given-name", "Grace"
                )
                time.sleep(1.5)
            refused = racing.result(timeout=60)
    finally:
        engine.dispose()
    assert_refused(refused, "--username")
    after = one(env, "users", "show", grace.id)["profile"]
    assert after.get("preferred_username") is None and after.get("given_name") is None, after
