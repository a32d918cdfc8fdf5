"""The audit log primitive: an event per fact, in the caller's transaction, never a secret."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import delete, select

from idp import audit
from idp.context import Context
from idp.storage import AuditEvent, User, now


def events(ctx: Context, event: str) -> list[AuditEvent]:
    with ctx.db() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)))


def test_record_writes_every_field_and_detail_round_trips(ctx: Context, make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    name = f"test_event_{secrets.token_hex(4)}"
    detail = {
        "reason": "wrong_password",
        "channel": "email",
        "recipient": "a***@example.com",
        "attempts": 3,
        "methods": ["pwd", "otp"],
        "nested": {"ok": True, "none": None},
    }
    with ctx.db.begin() as db:
        audit.record(
            db,
            name,
            outcome="failure",
            user_id=user.id,
            client_id="client-1",
            ip="2001:db8::1",
            user_agent="Mozilla/5.0 (X11; Linux x86_64)",
            detail=detail,
        )

    (event,) = events(ctx, name)
    assert isinstance(event.id, int)
    assert event.outcome == "failure"
    assert event.user_id == user.id and event.client_id == "client-1"
    assert event.ip == "2001:db8::1" and event.user_agent == "Mozilla/5.0 (X11; Linux x86_64)"
    assert event.detail == detail
    assert now() - 5 <= event.at <= now()


def test_optional_fields_may_be_absent_and_ids_increase(ctx: Context) -> None:
    name = f"test_event_{secrets.token_hex(4)}"
    with ctx.db.begin() as db:
        audit.record(db, name, outcome="success")
        audit.record(db, name, outcome="failure")

    first, second = events(ctx, name)
    assert (first.outcome, second.outcome) == ("success", "failure")
    assert first.id < second.id
    assert (first.user_id, first.client_id, first.ip, first.user_agent, first.detail) == (None,) * 5


def test_an_event_belongs_to_its_transaction(ctx: Context) -> None:
    name = f"test_event_{secrets.token_hex(4)}"
    with ctx.db() as db:
        audit.record(db, name, outcome="success")
        db.rollback()
    assert events(ctx, name) == []


def test_user_agent_is_truncated(ctx: Context) -> None:
    name = f"test_event_{secrets.token_hex(4)}"
    with ctx.db.begin() as db:
        audit.record(db, name, outcome="success", user_agent="A" * 5000)
    (event,) = events(ctx, name)
    assert event.user_agent == "A" * 512


def test_events_outlive_the_account(ctx: Context, make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    name = f"test_event_{secrets.token_hex(4)}"
    with ctx.db.begin() as db:
        audit.record(db, name, outcome="success", user_id=user.id)
    with ctx.db.begin() as db:
        db.execute(delete(User).where(User.id == user.id))
    (event,) = events(ctx, name)
    assert event.user_id == user.id


@pytest.mark.parametrize("key", ["password", "new_password", "code", "otp_code", "token", "refresh_token", "secret"])
def test_a_detail_named_like_a_secret_is_refused(ctx: Context, key: str) -> None:
    name = f"test_event_{secrets.token_hex(4)}"
    with ctx.db.begin() as db, pytest.raises(ValueError, match="secret"):
        audit.record(db, name, outcome="failure", detail={key: "123456"})
    assert events(ctx, name) == []


@pytest.mark.parametrize(
    ("recipient", "masked"),
    [
        ("alice@example.com", "a***@example.com"),
        ("+989121234567", "+98912***4567"),
        ("+15551234567", "+15551***4567"),
        ("+4312345", "+43***45"),
    ],
)
def test_mask_keeps_only_enough_to_tell_whose(recipient: str, masked: str) -> None:
    assert audit.mask(recipient) == masked
