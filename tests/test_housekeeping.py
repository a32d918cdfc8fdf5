"""`idp cleanup` and `idp audit` through the real console script, on a database of their own."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from idp.accounts.registration import LINK_LIFETIME
from idp.context import Context
from idp.migrate import upgrade
from idp.security.digests import new_id
from idp.storage import (
    AuditEvent,
    AuthorizationCode,
    AuthorizationRequest,
    BrowserSession,
    Client,
    Grant,
    OneTimeCode,
    OutboxMessage,
    RefreshToken,
    RevokedAccessToken,
    User,
    now,
)
from idp.storage.generations import Generation, Topic

from .conftest import SECRET_KEY, make_settings, run_idp

DAY = 86_400


@pytest.fixture
def env(own_database_url: str, tmp_path: Path) -> dict[str, str]:
    environ = {
        "IDP_DATABASE_URL": own_database_url,
        "IDP_KEYS_DIR": str(tmp_path / "keys"),
        "IDP_SECRET_KEY": SECRET_KEY,
        "HOME": str(tmp_path),
    }
    upgrade(environ["IDP_DATABASE_URL"])
    return environ


def ok(environ: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = run_idp(environ, *args)
    assert result.returncode == 0, (args, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines()]


def _seed(ctx: Context) -> None:
    """One expired and one live row of each kind that cleanup looks after."""
    stamp = now()
    with ctx.db.begin() as db:
        db.add(User(id="u1", email="a@example.com", created_at=stamp, updated_at=stamp, failed_sign_ins=0))
        db.flush()
        db.add(
            Client(
                id="c1",
                name="c",
                redirect_uris=[],
                post_logout_redirect_uris=[],
                scope="openid",
                grant_types=[],
                token_endpoint_auth_method="none",
                created_at=stamp,
            )
        )
        db.flush()
        for name, expires in (("old", stamp - 10), ("new", stamp + 600)):
            db.add(
                AuthorizationRequest(id=f"req-{name}", client_id="c1", params={}, created_at=stamp, expires_at=expires)
            )
            db.add(RevokedAccessToken(jti=f"jti-{name}", expires_at=expires))
        for name, expires in (("old", stamp - 2 * 3600), ("new", stamp - 10)):
            db.add(
                AuthorizationCode(
                    code_hash=f"code-{name}",
                    client_id="c1",
                    user_id="u1",
                    redirect_uri="x",
                    scope="openid",
                    auth_time=stamp,
                    amr=[],
                    created_at=stamp,
                    expires_at=expires,
                )
            )
            db.add(
                OneTimeCode(
                    id=new_id(),
                    purpose="sign_in",
                    identifier=f"x-{name}",
                    code_hash="h",
                    attempts=0,
                    created_at=stamp,
                    expires_at=expires,
                )
            )
        db.add(
            Grant(
                id="g-old",
                client_id="c1",
                user_id="u1",
                scope="openid",
                auth_time=0,
                amr=[],
                created_at=stamp - 2 * DAY,
            )
        )
        db.add(
            Grant(
                id="g-live",
                client_id="c1",
                user_id="u1",
                scope="openid",
                auth_time=0,
                amr=[],
                created_at=stamp - 2 * DAY,
            )
        )
        db.flush()
        db.add(
            RefreshToken(
                token_hash="rt-old",
                grant_id="g-old",
                scope="openid",
                created_at=0,
                expires_at=stamp - 10,
                used_at=stamp - 20,
            )
        )
        db.add(
            RefreshToken(
                token_hash="rt-rotated",
                grant_id="g-live",
                scope="openid",
                created_at=0,
                expires_at=stamp + DAY,
                used_at=stamp - 20,
            )
        )
        for name, ended in (("old", stamp - 40 * DAY), ("new", stamp - DAY)):
            db.add(
                BrowserSession(
                    id=f"s-{name}",
                    token_hash=f"t-{name}",
                    user_id="u1",
                    auth_time=0,
                    amr=[],
                    created_at=0,
                    last_seen_at=0,
                    expires_at=stamp,
                    ended_at=ended,
                )
            )
        for name, sent in (("old", stamp - 8 * DAY), ("new", stamp - DAY)):
            db.add(
                OutboxMessage(
                    id=f"m-{name}",
                    channel="email",
                    recipient="a@example.com",
                    body=None,
                    created_at=0,
                    attempts=1,
                    next_attempt_at=0,
                    useful_until=0,
                    sent_at=sent,
                )
            )
        db.add(
            OutboxMessage(
                id="m-queued",
                channel="email",
                recipient="a@example.com",
                body="sealed",
                created_at=0,
                attempts=0,
                next_attempt_at=0,
                useful_until=0,
            )
        )
        for name, at in (("old", stamp - 400 * DAY), ("new", stamp - DAY)):
            db.add(AuditEvent(at=at, event=f"event-{name}", outcome="success", user_id="u1"))


def _remaining(ctx: Context, column) -> set[str]:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        return set(db.scalars(select(column)))


def test_cleanup_removes_only_what_can_no_longer_matter(env):
    ctx = Context.build(make_settings(env))
    _seed(ctx)
    removed = ok(env, "cleanup")[0]["removed"]
    assert removed["authorization_requests"] == 1
    assert _remaining(ctx, AuthorizationRequest.id) == {"req-new"}
    assert _remaining(ctx, RevokedAccessToken.jti) == {"jti-new"}
    assert _remaining(ctx, AuthorizationCode.code_hash) == {"code-new"}, "a code stays an hour for reuse detection"
    assert _remaining(ctx, OneTimeCode.identifier) == {"x-new"}
    assert _remaining(ctx, RefreshToken.token_hash) == {"rt-rotated"}, "a rotated token stays until it expires"
    assert _remaining(ctx, Grant.id) == {"g-live"}
    assert _remaining(ctx, BrowserSession.id) == {"s-new"}
    assert _remaining(ctx, OutboxMessage.id) == {"m-new", "m-queued"}
    assert _remaining(ctx, AuditEvent.event) == {"event-new"}
    assert ok(env, "cleanup") == [{"removed": {}}], "a second run finds nothing"
    ctx.close()


def people_counter(ctx: Context) -> int | None:
    with ctx.db() as db:
        return db.scalar(select(Generation.value).where(Generation.topic == Topic.PEOPLE.value))


def test_cleanup_moves_the_people_counter_only_when_it_removes_someone(env):
    """Every process drops what it keeps of people when the counter moves: a cleanup (hourly, in
    every process) that removes nobody must leave it be."""
    ctx = Context.build(make_settings(env))
    stamp = now()
    with ctx.db.begin() as db:
        db.add(User(id="proven", email="p@example.com", email_verified=True, created_at=0, updated_at=0))
        db.add(User(id="young", email="y@example.com", registration_browser_hash="h", created_at=stamp, updated_at=0))
    before = people_counter(ctx)
    assert ok(env, "cleanup") == [{"removed": {}}]
    assert people_counter(ctx) == before, "nobody removed"

    with ctx.db.begin() as db:
        stale = stamp - LINK_LIFETIME - 60
        db.add(
            User(id="unproven", email="u@example.com", registration_browser_hash="h", created_at=stale, updated_at=0)
        )
    before = people_counter(ctx)
    assert ok(env, "cleanup") == [{"removed": {"unproven_registrations": 1}}]
    assert people_counter(ctx) != before, "someone removed"
    assert _remaining(ctx, User.id) == {"proven", "young"}
    ctx.close()


def test_audit_retention_zero_keeps_every_event(env):
    env = {**env, "IDP_AUDIT_RETENTION_DAYS": "0"}
    ctx = Context.build(make_settings(env))
    _seed(ctx)
    ok(env, "cleanup")
    assert _remaining(ctx, AuditEvent.event) == {"event-old", "event-new"}
    ctx.close()


def test_audit_lists_and_filters_events_as_json_lines(env):
    ctx = Context.build(make_settings(env))
    stamp = now()
    with ctx.db.begin() as db:
        db.add(
            AuditEvent(
                at=stamp - 3 * DAY,
                event="sign_in",
                outcome="failure",
                user_id="u1",
                client_id="c1",
                detail={"reason": "wrong_password"},
            )
        )
        db.add(AuditEvent(at=stamp - DAY, event="sign_in", outcome="success", user_id="u1", client_id="c2"))
        db.add(AuditEvent(at=stamp, event="password_reset", outcome="success", user_id="u2"))
    every = ok(env, "audit")
    assert [e["event"] for e in every] == ["sign_in", "sign_in", "password_reset"], "oldest first"
    assert every[0]["detail"] == {"reason": "wrong_password"} and every[0]["at"].endswith("+00:00")
    assert [e["outcome"] for e in ok(env, "audit", "--user", "u1")] == ["failure", "success"]
    assert [e["client_id"] for e in ok(env, "audit", "--client", "c2")] == ["c2"]
    assert [e["event"] for e in ok(env, "audit", "--event", "password_reset")] == ["password_reset"]
    two_days_ago = datetime.fromtimestamp(stamp - 2 * DAY, UTC).isoformat()
    assert len(ok(env, "audit", "--since", two_days_ago)) == 2
    assert len(ok(env, "audit", "--until", two_days_ago)) == 1
    assert [e["event"] for e in ok(env, "audit", "--limit", "1")] == ["password_reset"], "the newest"
    with ctx.db() as db:
        assert db.scalar(select(func.count()).select_from(AuditEvent)) == 3
    for bad in (["--since", "yesterday"], ["--limit", "0"], ["--bogus"]):
        result = run_idp(env, "audit", *bad)
        assert result.returncode == 2 and result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    ctx.close()
