"""An operator's commands for a registered client: show, update, rotate-secret; each change audited
with the operating-system account that ran it, and bad input written nowhere."""

from __future__ import annotations

import json

import pytest

from .conftest import run_idp
from .test_cli import cli_app, clients, create_client, env, one  # noqa: F401 - cli_app and env are fixtures

CC = {"grant_type": "client_credentials"}


def test_show_prints_what_list_prints_for_one_client(env):  # noqa: F811
    made = create_client(env, "--logo-uri", "https://rp.example/logo.png")
    assert one(env, "clients", "show", made["client_id"]) == clients(env)[0]
    unknown = run_idp(env, "clients", "show", "nope")
    assert unknown.returncode == 2 and unknown.stderr.strip().endswith("no client with id nope")


def test_update_changes_only_what_it_names(env):  # noqa: F811
    made = create_client(env, "--web-origin", "https://app.example", "--first-party")
    before = one(env, "clients", "show", made["client_id"])
    after = one(
        env,
        "clients",
        "update",
        made["client_id"],
        *("--name", "Renamed"),
        *("--redirect-uri", "https://rp.example/one", "--redirect-uri", "https://rp.example/two"),
        "--no-first-party",
        *("--access-token-ttl", "120"),
    )
    assert after["name"] == "Renamed" and after["first_party"] is False and after["access_token_ttl"] == 120
    assert after["redirect_uris"] == ["https://rp.example/one", "https://rp.example/two"]
    unchanged = {
        k: v for k, v in before.items() if k not in ("name", "redirect_uris", "first_party", "access_token_ttl")
    }
    assert {k: after[k] for k in unchanged} == unchanged
    assert one(env, "clients", "show", made["client_id"]) == after


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--redirect-uri", "javascript:alert(1)"), "--redirect-uri"),
        (("--name", ""), "--name"),
        (("--scope", 'openid "quoted"'), "--scope"),
        (("--access-token-ttl", "5"), "--access-token-ttl"),
        (("--token-endpoint-auth-method", "none"), "--token-endpoint-auth-method"),
        (("--logo-uri", "data:image/png;base64,AAAA"), "--logo-uri"),
    ],
)
def test_a_bad_update_says_why_in_one_line_and_changes_nothing(env, args, option):  # noqa: F811
    made = create_client(env)
    before = one(env, "clients", "show", made["client_id"])
    refused = run_idp(env, "clients", "update", made["client_id"], *args)
    assert refused.returncode == 2 and refused.stdout == "", refused
    [line] = refused.stderr.strip().splitlines()
    assert option in line and "Traceback" not in line
    assert one(env, "clients", "show", made["client_id"]) == before


def test_rotate_secret_stops_the_old_one_at_once(env, cli_app):  # noqa: F811
    made = create_client(env, "--grant-type", "client_credentials", "--scope", "api")
    old = (made["client_id"], made["client_secret"])
    assert cli_app.post("/token", data=CC, auth=old).status_code == 200
    rotated = one(env, "clients", "rotate-secret", made["client_id"])
    assert rotated["client_id"] == made["client_id"] and rotated["client_secret"] != made["client_secret"]
    assert cli_app.post("/token", data=CC, auth=old).status_code == 401
    assert cli_app.post("/token", data=CC, auth=(made["client_id"], rotated["client_secret"])).status_code == 200
    public = create_client(env, "--token-endpoint-auth-method", "none")
    refused = run_idp(env, "clients", "rotate-secret", public["client_id"])
    assert refused.returncode == 2 and "without a secret" in refused.stderr


def test_each_change_is_audited_with_the_operator_and_no_secret(env):  # noqa: F811
    made = create_client(env)
    one(env, "clients", "update", made["client_id"], "--name", "Audited")
    rotated = one(env, "clients", "rotate-secret", made["client_id"])
    one(env, "clients", "delete", made["client_id"])
    printed = run_idp(env, "audit", "--client", made["client_id"], "--event", "admin_action").stdout
    events = [json.loads(line) for line in printed.splitlines()]
    assert [e["detail"]["command"] for e in events] == ["clients update", "clients rotate-secret", "clients delete"]
    assert events[0]["detail"]["options"] == ["name"]
    assert all(e["user_agent"].startswith("idp command line, operator ") for e in events)
    assert rotated["client_secret"] not in printed and made["client_secret"] not in printed
