"""The audit trail of what happens to tokens, consent and sign-out: each event with the client, the
person, the address and the time, and never the token, code or secret itself."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from idp import audit
from idp.accounts.deletion import delete_account
from idp.accounts.users import lock_user
from idp.audit import AuditQueue, Event
from idp.context import Context
from idp.storage import AuditEvent

from . import flows
from .flows import (
    RegisteredClient,
    authorize_params,
    exchange,
    path_of,
    pkce_pair,
    query_of,
    sign_in,
    submit_consent,
    submit_login,
)


def new_events(ctx: Context, since: int, name: str) -> list[AuditEvent]:
    with ctx.db() as db:
        query = select(AuditEvent).where(AuditEvent.id > since, AuditEvent.event == name).order_by(AuditEvent.id)
        return list(db.scalars(query))


def last_id(ctx: Context) -> int:
    with ctx.db() as db:
        return db.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1)) or 0


def assert_recorded(
    event: AuditEvent, *, client: RegisteredClient, user: flows.TestUser | None, secrets: list[str]
) -> None:
    """Who, which client, from where and when; none of the secrets in any of it."""
    assert event.client_id == client.client_id
    assert event.user_id == (user.id if user is not None else None)
    assert event.ip and event.at > 0
    stored = json.dumps([event.detail, event.user_agent, event.client_id, event.user_id])
    for secret in secrets:
        assert secret not in stored


def secrets_of(response: dict[str, Any]) -> list[str]:
    return [response[kind] for kind in ("access_token", "id_token", "refresh_token") if kind in response]


def code_and_tokens(http: Any, client: RegisteredClient, user: flows.TestUser) -> tuple[str, dict[str, Any]]:
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, user, challenge, scope="openid offline_access")["code"]
    response = exchange(http, client, code, verifier)
    assert response.status_code == 200, response.text
    return code, response.json()


def test_each_grant_type_is_audited_as_it_issues_tokens(http, ctx, make_client, make_user):
    app = make_client(
        grant_types=["authorization_code", "refresh_token", "client_credentials"], scope="openid offline_access api"
    )
    user = make_user()
    since = last_id(ctx)
    code, tokens = code_and_tokens(http, app, user)
    refreshed = http.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=app.auth
    )
    assert refreshed.status_code == 200, refreshed.text
    machine = http.post("/token", data={"grant_type": "client_credentials", "scope": "api"}, auth=app.auth)
    assert machine.status_code == 200, machine.text

    # A client_credentials request writes nothing else: its event comes in the next batch.
    assert flows.eventually(lambda: len(new_events(ctx, since, "tokens_issued")) == 3)
    issued = new_events(ctx, since, "tokens_issued")
    assert [e.detail["grant_type"] for e in issued] == ["authorization_code", "refresh_token", "client_credentials"]
    secrets = [code, app.client_secret or "", *secrets_of(tokens), *secrets_of(refreshed.json())]
    secrets.append(machine.json()["access_token"])
    for event in issued[:2]:
        assert_recorded(event, client=app, user=user, secrets=secrets)
        assert event.detail["issued"] == ["access_token", "id_token", "refresh_token"]
        assert event.detail["scope"] == "openid offline_access"
    assert_recorded(issued[2], client=app, user=None, secrets=secrets)
    assert issued[2].detail == {"grant_type": "client_credentials", "scope": "api", "issued": ["access_token"]}


def test_a_refused_grant_issues_nothing_and_is_not_audited_as_issued(http, ctx, make_client):
    app = make_client()
    since = last_id(ctx)
    refused = http.post("/token", data={"grant_type": "refresh_token", "refresh_token": "nope"}, auth=app.auth)
    assert refused.status_code == 400
    assert new_events(ctx, since, "tokens_issued") == []


def test_a_refresh_token_used_twice_is_audited_with_its_family_revoked(http, ctx, make_client, make_user):
    app, user = make_client(), make_user()
    _, tokens = code_and_tokens(http, app, user)
    again = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    rotated = http.post("/token", data=again, auth=app.auth)
    assert rotated.status_code == 200
    since = last_id(ctx)
    stolen = http.post("/token", data=again, auth=app.auth)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    [event] = new_events(ctx, since, "refresh_token_reused")
    assert event.outcome == "failure"
    assert_recorded(event, client=app, user=user, secrets=[tokens["refresh_token"], rotated.json()["refresh_token"]])
    successor = {"grant_type": "refresh_token", "refresh_token": rotated.json()["refresh_token"]}
    assert http.post("/token", data=successor, auth=app.auth).status_code == 400, "the family is revoked"


def test_a_code_used_twice_is_audited(http, ctx, make_client, make_user):
    app, user = make_client(), make_user()
    verifier, challenge = pkce_pair()
    code = sign_in(http, app, user, challenge)["code"]
    assert exchange(http, app, code, verifier).status_code == 200
    since = last_id(ctx)
    assert exchange(http, app, code, verifier).status_code == 400
    [event] = new_events(ctx, since, "authorization_code_reused")
    assert_recorded(event, client=app, user=user, secrets=[code, verifier])


def test_revocation_is_audited_only_when_it_took_effect(http, ctx, make_client, make_user):
    app, user = make_client(), make_user()
    _, tokens = code_and_tokens(http, app, user)
    since = last_id(ctx)
    for token in (tokens["access_token"], tokens["refresh_token"], "not-a-token-of-ours"):
        assert http.post("/revoke", data={"token": token}, auth=app.auth).status_code == 200
    revoked = new_events(ctx, since, "token_revoked")
    assert [e.detail["kind"] for e in revoked] == ["access_token", "refresh_token"]
    for event in revoked:
        assert_recorded(event, client=app, user=user, secrets=secrets_of(tokens))
    again = last_id(ctx)
    assert http.post("/revoke", data={"token": tokens["access_token"]}, auth=app.auth).status_code == 200
    assert new_events(ctx, again, "token_revoked") == [], "revoked before: nothing new happened"


def test_a_token_of_another_client_is_not_revoked_nor_audited(http, ctx, make_client, make_user):
    owner, other = make_client(), make_client()
    _, tokens = code_and_tokens(http, owner, make_user())
    since = last_id(ctx)
    assert http.post("/revoke", data={"token": tokens["refresh_token"]}, auth=other.auth).status_code == 200
    assert new_events(ctx, since, "token_revoked") == []


def test_consent_given_and_refused_are_audited(http, ctx, make_client, make_user):
    app, user = make_client(), make_user()
    since = last_id(ctx)
    verifier, challenge = pkce_pair()
    start = http.get("/authorize", params=authorize_params(app, challenge, scope="openid email"))
    signed_in = submit_login(http, start.headers["location"], user.email, user.password or "")
    consent_page = signed_in.headers["location"]
    assert urlsplit(consent_page).path == "/consent"
    refused = submit_consent(http, consent_page, "deny")
    assert query_of(refused.headers["location"])["error"] == "access_denied"
    [declined] = new_events(ctx, since, "consent_refused")
    assert_recorded(declined, client=app, user=user, secrets=[user.password or ""])
    assert declined.detail == {"scope": "openid email"}

    again = http.get("/authorize", params=authorize_params(app, challenge, scope="openid email"))
    allowed = submit_consent(http, path_of(again.headers["location"]), "allow")
    code = query_of(allowed.headers["location"])["code"]
    [given] = new_events(ctx, since, "consent_given")
    assert_recorded(given, client=app, user=user, secrets=[code])
    assert given.detail == {"scope": "openid email"}


def test_sign_out_is_audited_with_the_application_that_asked(http, ctx, make_client, make_user):
    app, user = make_client(), make_user()
    _, tokens = code_and_tokens(http, app, user)
    since = last_id(ctx)
    bye = http.get(
        "/logout", params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://rp.example/bye"}
    )
    assert bye.status_code == 303 and bye.headers["location"].startswith("https://rp.example/bye")
    [event] = new_events(ctx, since, "sign_out")
    assert_recorded(event, client=app, user=user, secrets=secrets_of(tokens))
    assert event.detail["session_id"]


# --- events written in batches ------------------------------------------------------------------


def queue_one(ctx: Context, queue: AuditQueue, user_id: str, *, commit: bool) -> None:
    with ctx.db() as db:
        audit.set_origin(db, audit.Origin("203.0.113.9", "Batch/1.0"))
        detail = {"grant_type": "refresh_token", "scope": "openid", "issued": ["access_token"]}
        queue.record(db, Event.TOKENS_ISSUED, outcome="success", user_id=user_id, detail=detail)
        if not commit:
            # As the pipeline does when a refusal's answer writes an event of its own: the
            # session goes on after the rollback, and what it commits then is only what came after.
            db.rollback()
        db.commit()


def test_a_batched_event_is_written_only_if_its_request_committed(ctx, make_user):
    queue, user = AuditQueue(ctx.db), make_user()
    since = last_id(ctx)
    queue_one(ctx, queue, user.id, commit=False)
    assert queue.write() == 0
    queue_one(ctx, queue, user.id, commit=True)
    assert queue.write() == 1
    [written] = new_events(ctx, since, "tokens_issued")
    assert (written.user_id, written.ip, written.user_agent) == (user.id, "203.0.113.9", "Batch/1.0")


def test_a_batched_event_of_a_person_deleted_meanwhile_is_written_without_where_it_came_from(ctx, make_user):
    queue, user = AuditQueue(ctx.db), make_user()
    since = last_id(ctx)
    queue_one(ctx, queue, user.id, commit=True)
    with ctx.db.begin() as db:
        delete_account(ctx, db, lock_user(db, user.id), by="operator")
    assert queue.write() == 1
    [written] = new_events(ctx, since, "tokens_issued")
    assert (written.user_id, written.ip, written.user_agent, written.detail) == (user.id, None, None, None)
