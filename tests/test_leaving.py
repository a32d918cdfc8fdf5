"""A person takes their data and deletes their account, from the account API, the account page or
an operator's command line: afterwards nothing signs in, refreshes, introspects or reads UserInfo
as them, and the audit trail about them is kept without what ties it to them."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from starlette.testclient import TestClient

from idp.storage import AuditEvent, BrowserSession, Consent, Grant, RefreshToken, User

from .conftest import PASSWORD, TEST_ISSUER, run_idp
from .flows import eventually, hidden_fields, tokens_for
from .test_account import emailed
from .test_account_api import assert_problem, bearer, documented, sms_log  # noqa: F401 - documented and sms_log are fixtures
from .test_cli import env, one  # noqa: F401 - env is a fixture

SECRET_FIELDS = ("password_hash", "totp_secret", "token_hash", "code_hash", "secret_hash")


def held_about(ctx: Any, user_id: str) -> dict[str, int]:
    """How many rows of each kind still name the person."""
    with ctx.db() as db:
        return {
            "users": len(db.scalars(select(User).where(User.id == user_id)).all()),
            "sessions": len(db.scalars(select(BrowserSession).where(BrowserSession.user_id == user_id)).all()),
            "grants": len(db.scalars(select(Grant).where(Grant.user_id == user_id)).all()),
            "consents": len(db.scalars(select(Consent).where(Consent.user_id == user_id)).all()),
            "refresh_tokens": len(db.scalars(select(RefreshToken).join(Grant).where(Grant.user_id == user_id)).all()),
        }


def audit_of(ctx: Any, user_id: str) -> list[AuditEvent]:
    with ctx.db() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.user_id == user_id).order_by(AuditEvent.id)))


def assert_nothing_works_as(http: TestClient, client: Any, user: Any, tokens: dict[str, Any]) -> None:
    refreshed = http.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=client.auth
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant", refreshed.text
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert http.post("/introspect", data={"token": token}, auth=client.auth).json() == {"active": False}
    assert http.get("/userinfo", headers=bearer(tokens["access_token"])).status_code == 401
    assert http.get("/api/account", headers=bearer(tokens["access_token"])).status_code == 401
    page = http.get("/login")
    signed_in = http.post("/login", data={**hidden_fields(page.text), "username": user.email, "password": PASSWORD})
    assert signed_in.status_code == 400, "the password signs in no one"


def issued_events(ctx: Any, user_id: str) -> int:
    with ctx.db() as db:
        query = select(AuditEvent.id).where(AuditEvent.user_id == user_id, AuditEvent.event == "tokens_issued")
        return len(list(db.scalars(query)))


# --- the account API -----------------------------------------------------------------------------


def test_export_then_delete_through_the_account_api(http, ctx, make_client, make_user, sms_log, documented):  # noqa: F811
    client, user = make_client(first_party=True, scope="openid email offline_access"), make_user(name="Leaving Api")
    tokens = tokens_for(http, client, user, scope="openid email offline_access")
    # The token endpoint's event is written in the next batch, within half a second.
    assert eventually(lambda: issued_events(ctx, user.id) == 1)

    exported = http.get("/api/account/export", headers=bearer(tokens["access_token"]))
    assert exported.status_code == 200, exported.text
    assert exported.headers["cache-control"] == "no-store"
    documented.check(exported, "/api/account/export", "get")
    data = exported.json()
    assert data["profile"]["sub"] == user.id and data["profile"]["email"] == user.email
    assert data["profile"]["name"] == "Leaving Api" and data["profile"]["has_password"] is True
    assert data["profile"]["groups"] == [] and data["profile"]["given_name"] is None
    assert [s["ended_at"] for s in data["sessions"]] == [None]
    [application] = data["applications"]
    assert application["client_id"] == client.client_id and application["name"] == "Test app"
    assert [g["scope"] for g in application["grants"]] == ["openid email offline_access"]
    assert {"sign_in", "tokens_issued"} <= {e["event"] for e in data["audit_events"]}
    text = json.dumps(data)
    assert not any(field in text for field in SECRET_FIELDS)
    assert PASSWORD not in text and tokens["refresh_token"] not in text and tokens["access_token"] not in text

    wrong = http.request(
        "DELETE", "/api/account", json={"current_password": "not it"}, headers=bearer(tokens["access_token"])
    )
    assert_problem(wrong, 403, "wrong-password")
    documented.check(wrong, "/api/account", "delete")
    assert held_about(ctx, user.id)["users"] == 1

    deleted = http.request(
        "DELETE", "/api/account", json={"current_password": PASSWORD}, headers=bearer(tokens["access_token"])
    )
    assert deleted.status_code == 204, deleted.text
    documented.check(deleted, "/api/account", "delete")
    assert held_about(ctx, user.id) == {"users": 0, "sessions": 0, "grants": 0, "consents": 0, "refresh_tokens": 0}
    assert_nothing_works_as(http, client, user, tokens)
    assert "your account was deleted on" in emailed(ctx, sms_log, user.email, "Your account was deleted")

    kept = audit_of(ctx, user.id)
    *before, last = kept
    assert last.event == "account_deleted" and last.detail == {"by": "self"} and last.ip
    assert last.client_id == client.client_id
    assert before and all(e.ip is None and e.user_agent is None and e.detail is None for e in before)


def test_an_export_is_audited_and_holds_only_the_persons_own(http, ctx, make_client, make_user):
    client = make_client(first_party=True)
    mine, theirs = make_user(), make_user()
    tokens = tokens_for(http, client, mine)
    tokens_for(TestClient(http.app, base_url=TEST_ISSUER, follow_redirects=False), client, theirs)
    # The token endpoint's event is written in the next batch: once it is, the export's comes after.
    assert eventually(lambda: issued_events(ctx, mine.id) == 1)
    data = http.get("/api/account/export", headers=bearer(tokens["access_token"])).json()
    assert theirs.id not in json.dumps(data) and theirs.email not in json.dumps(data)
    assert audit_of(ctx, mine.id)[-1].event == "personal_data_exported"


def test_deleting_without_the_password_is_refused_and_deletes_nothing(http, ctx, make_client, make_user):
    client, user = make_client(first_party=True), make_user()
    tokens = tokens_for(http, client, user)
    refused = http.request("DELETE", "/api/account", json={}, headers=bearer(tokens["access_token"]))
    assert_problem(refused, 403, "wrong-password")
    assert held_about(ctx, user.id)["users"] == 1
    assert http.get("/api/account", headers=bearer(tokens["access_token"])).status_code == 200


# --- the account page ----------------------------------------------------------------------------


def test_download_and_delete_from_the_account_page(http, ctx, make_client, make_user, sms_log):  # noqa: F811
    client, user = make_client(), make_user()
    tokens = tokens_for(http, client, user, scope="openid offline_access")
    page = http.get("/account")
    assert 'href="/account/export"' in page.text and 'action="/account/delete"' in page.text

    download = http.get("/account/export")
    assert download.status_code == 200
    assert download.headers["content-disposition"] == 'attachment; filename="account.json"'
    assert download.json()["profile"]["sub"] == user.id

    fields = hidden_fields(page.text)
    forged = http.post("/account/delete", data={"current_password": PASSWORD})
    assert forged.status_code in (400, 403) and held_about(ctx, user.id)["users"] == 1, "no CSRF token, no deletion"
    wrong = http.post("/account/delete", data={**fields, "current_password": "not it"})
    assert wrong.status_code == 400 and held_about(ctx, user.id)["users"] == 1
    assert "Your current password is not right." in wrong.text

    done = http.post("/account/delete", data={**fields, "current_password": PASSWORD})
    assert done.status_code == 200, done.text
    assert "Your account is deleted" in done.text
    assert held_about(ctx, user.id)["users"] == 0
    assert http.get("/account").status_code == 303, "this browser is signed out"
    assert_nothing_works_as(http, client, user, tokens)
    emailed(ctx, sms_log, user.email, "Your account was deleted")


# --- the operator's command line -----------------------------------------------------------------


def test_an_operator_shows_and_deletes_a_person(env):  # noqa: F811
    made = one(env, "users", "create", "--email", "leaving@example.com", "--password", PASSWORD, "--verified")
    shown = one(env, "users", "show", made["id"])
    assert shown["profile"]["email"] == "leaving@example.com"
    assert not any(field in json.dumps(shown) for field in SECRET_FIELDS)

    assert one(env, "users", "delete", made["id"]) == {"id": made["id"], "deleted": True}
    gone = run_idp(env, "users", "show", made["id"])
    assert gone.returncode == 2 and gone.stderr.strip().endswith(f"no user with id {made['id']}")
    again = run_idp(env, "users", "delete", made["id"])
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1

    events = [json.loads(line) for line in run_idp(env, "audit", "--user", made["id"]).stdout.splitlines()]
    deletion = [e for e in events if e["event"] == "account_deleted"]
    assert len(deletion) == 1 and deletion[0]["detail"] == {"by": "operator"}
    assert deletion[0]["user_agent"].startswith("idp command line, operator ")


def test_deleting_someone_who_does_not_exist_is_one_line(env):  # noqa: F811
    result = run_idp(env, "users", "delete", "x" * 500)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
