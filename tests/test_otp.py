"""One-time codes at the service level: how they are made, kept, spent, replaced and rationed."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select, update

from idp.accounts import otp
from idp.storage import OneTimeCode, now

PURPOSE = "sign_in"


@pytest.fixture
def identifier() -> str:
    return f"otp-{secrets.token_hex(6)}@example.com"


def issue(ctx, identifier: str, purpose: str = PURPOSE) -> otp.IssuedCode:  # type: ignore[no-untyped-def]
    with ctx.db.begin() as db:
        return otp.issue(ctx, db, purpose=purpose, identifier=identifier, user_id=None)


def verify(ctx, identifier: str, code: str, purpose: str = PURPOSE) -> bool:  # type: ignore[no-untyped-def]
    with ctx.db.begin() as db:
        return otp.verify(ctx, db, purpose=purpose, identifier=identifier, code=code) is not None


def configured(ctx, **settings: Any):  # type: ignore[no-untyped-def]
    """``ctx`` with other settings: the codes' length, lifetime and tries are read from them."""
    return replace(ctx, settings=replace(ctx.settings, **settings))


def rows(ctx, identifier: str) -> list[OneTimeCode]:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        found = list(db.scalars(select(OneTimeCode).where(OneTimeCode.identifier == identifier)))
        db.expunge_all()
        return found


def move_back(ctx, identifier: str, seconds: int) -> None:  # type: ignore[no-untyped-def]
    """Time passes for this identifier's codes."""
    with ctx.db.begin() as db:
        db.execute(
            update(OneTimeCode)
            .where(OneTimeCode.identifier == identifier)
            .values(created_at=OneTimeCode.created_at - seconds, expires_at=OneTimeCode.expires_at - seconds)
        )


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- making and keeping ----------------------------------------------------------------------


@pytest.mark.parametrize("length", [6, 7, 8])
def test_codes_have_the_configured_number_of_digits(ctx, length) -> None:  # type: ignore[no-untyped-def]
    ctx = configured(ctx, otp_length=length)
    identifier = f"digits-{secrets.token_hex(6)}@example.com"
    codes = [issue(ctx, identifier).code for _ in range(3)]
    assert all(len(code) == length and code.isdigit() for code in codes)
    assert verify(ctx, identifier, codes[-1])


def test_codes_come_from_secrets(ctx, identifier, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    drawn: list[int] = []

    def randbelow(limit: int) -> int:
        drawn.append(limit)
        return 42

    monkeypatch.setattr(otp.secrets, "randbelow", randbelow)
    issued = issue(ctx, identifier)
    assert drawn == [1_000_000]
    assert issued.code == "000042", "leading zeros are kept"
    assert verify(ctx, identifier, "000042")


def test_the_code_is_stored_only_as_a_keyed_digest(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    issued = issue(ctx, identifier)
    (row,) = rows(ctx, identifier)
    values = [str(getattr(row, column.key)) for column in OneTimeCode.__table__.columns]
    assert not any(issued.code in value for value in values), values
    assert row.code_hash != hashlib.sha256(issued.code.encode()).hexdigest()
    # The digest is keyed: under another secret key the right code is not recognised.
    assert not verify(replace(ctx, secret_key="another-secret-key-" + "y" * 32), identifier, issued.code)
    assert verify(ctx, identifier, issued.code)


def test_a_right_code_works_once(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    issued = issue(ctx, identifier)
    assert verify(ctx, identifier, f"  {issued.code} ")
    assert not verify(ctx, identifier, issued.code)


def test_a_code_is_bound_to_its_identifier_and_purpose(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    issued = issue(ctx, identifier)
    assert not verify(ctx, "someone-else@example.com", issued.code)
    assert not verify(ctx, identifier, issued.code, purpose="second_factor")
    assert verify(ctx, identifier, issued.code)


# --- expiry and tries ------------------------------------------------------------------------


def test_a_code_expires_after_its_ttl(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    issued = issue(ctx, identifier)
    ttl = ctx.settings.otp_ttl
    assert issued.expires_at - now() in range(ttl - 2, ttl + 1)
    with ctx.db.begin() as db:
        db.execute(update(OneTimeCode).where(OneTimeCode.identifier == identifier).values(expires_at=now() - 1))
    assert not verify(ctx, identifier, issued.code)


def test_the_ttl_setting_sets_the_lifetime(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    issued = issue(configured(ctx, otp_ttl=600), identifier)
    (row,) = rows(ctx, identifier)
    assert row.expires_at - row.created_at == 600 == issued.expires_at - row.created_at


def test_three_wrong_tries_spend_the_code(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    issued = issue(ctx, identifier)
    for _ in range(3):
        assert not verify(ctx, identifier, wrong(issued.code))
    assert not verify(ctx, identifier, issued.code), "the right code after three wrong ones fails"


def test_two_wrong_tries_leave_the_code_usable(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    issued = issue(ctx, identifier)
    for _ in range(2):
        assert not verify(ctx, identifier, wrong(issued.code))
    assert verify(ctx, identifier, issued.code)


@pytest.mark.parametrize("attempts", [4, 5])
def test_the_attempts_setting_sets_the_tries(ctx, identifier, attempts) -> None:  # type: ignore[no-untyped-def]
    ctx = configured(ctx, otp_attempts=attempts)
    issued = issue(ctx, identifier)
    for _ in range(attempts - 1):
        assert not verify(ctx, identifier, wrong(issued.code))
    assert verify(ctx, identifier, issued.code)
    spent = issue(ctx, identifier)
    for _ in range(attempts):
        assert not verify(ctx, identifier, wrong(spent.code))
    assert not verify(ctx, identifier, spent.code)


@pytest.mark.parametrize("attempt", ["", "12345", "1234567", "abcdef", "x" * 5000])
def test_malformed_attempts_count_as_wrong_tries(ctx, identifier, attempt) -> None:  # type: ignore[no-untyped-def]
    issued = issue(ctx, identifier)
    for _ in range(3):
        assert not verify(ctx, identifier, attempt)
    assert not verify(ctx, identifier, issued.code)


def test_a_new_code_replaces_the_previous_one(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    first = issue(ctx, identifier)
    second = issue(ctx, identifier)
    if first.code == second.code:  # one chance in a million: draw again
        second = issue(ctx, identifier)
    assert not verify(ctx, identifier, first.code)
    assert verify(ctx, identifier, second.code)


# --- rationing -------------------------------------------------------------------------------


def test_at_most_three_codes_per_identifier_in_two_minutes(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        issue(ctx, identifier)
    with pytest.raises(otp.ResendTooSoon) as raised:
        issue(ctx, identifier)
    first_wait = raised.value.wait
    assert 0 < first_wait <= 120
    assert len(rows(ctx, identifier)) == 3, "a refused code leaves nothing behind"

    move_back(ctx, identifier, 60)
    with pytest.raises(otp.ResendTooSoon) as raised:
        issue(ctx, identifier)
    assert 0 < raised.value.wait <= first_wait - 59

    move_back(ctx, identifier, 61)
    fresh = issue(ctx, identifier)
    assert verify(ctx, identifier, fresh.code)


def test_at_most_ten_codes_per_identifier_in_an_hour(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    """Paced under the two-minute ration, one number still gets no more than ten codes an hour."""
    for _ in range(10):
        issue(ctx, identifier)
        move_back(ctx, identifier, 121)
    with pytest.raises(otp.ResendTooSoon) as raised:
        issue(ctx, identifier)
    oldest_age = 10 * 121
    assert 3600 - oldest_age - 5 <= raised.value.wait <= 3600 - oldest_age, "until the oldest is an hour old"
    assert len(rows(ctx, identifier)) == 10, "a refused code leaves nothing behind"

    move_back(ctx, identifier, raised.value.wait)
    assert verify(ctx, identifier, issue(ctx, identifier).code)


def test_each_purpose_of_an_identifier_has_a_ration_of_its_own(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    """Sign-in codes anyone may ask for never spend the codes of a second factor."""
    for _ in range(3):
        issue(ctx, identifier, purpose="sign_in")
    with pytest.raises(otp.ResendTooSoon):
        issue(ctx, identifier, purpose="sign_in")
    issue(ctx, identifier, purpose="second_factor")
    issue(ctx, identifier, purpose="verify_phone")
    issue(ctx, "another-" + identifier, purpose="sign_in")


def test_resend_wait_is_zero_while_codes_may_go(ctx, identifier) -> None:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        assert otp.resend_wait(db, identifier, PURPOSE) == 0
    issue(ctx, identifier)
    issue(ctx, identifier)
    with ctx.db() as db:
        assert otp.resend_wait(db, identifier, PURPOSE) == 0
    issue(ctx, identifier)
    with ctx.db() as db:
        assert otp.resend_wait(db, identifier, PURPOSE) > 0
        assert otp.resend_wait(db, identifier, "second_factor") == 0


# --- comparison ------------------------------------------------------------------------------


@pytest.fixture
def comparisons(monkeypatch) -> Iterator[list[tuple[bytes, bytes]]]:  # type: ignore[no-untyped-def]
    """Every comparison ``otp`` makes, still answered by the real constant-time function."""
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(otp.hmac, "compare_digest", spy)
    yield seen


def test_codes_are_compared_in_constant_time(ctx, identifier, comparisons) -> None:  # type: ignore[no-untyped-def]
    """Every try, right or wrong, goes through ``hmac.compare_digest`` on equal-length digests,
    so the time taken says nothing about how many leading digits were right."""
    issued = issue(ctx, identifier)
    near_misses = [issued.code[:i] + str((int(issued.code[i]) + 1) % 10) + issued.code[i + 1 :] for i in (0, 5)]
    for attempt in near_misses:
        assert not verify(ctx, identifier, attempt)
    assert verify(ctx, identifier, issued.code)
    assert len(comparisons) == 3
    assert all(len(a) == len(b) == 64 for a, b in comparisons)
    assert all(issued.code.encode() not in a + b for a, b in comparisons)


# --- racing ----------------------------------------------------------------------------------


def test_two_threads_with_the_right_code_at_once_succeed_once(ctx) -> None:  # type: ignore[no-untyped-def]
    """Each thread has its own session on the suite's database; the conditional UPDATE decides."""
    for _ in range(10):
        identifier = f"race-{secrets.token_hex(6)}@example.com"
        assert sorted(race(ctx, identifier, issue(ctx, identifier).code)) == [False, True]


def race(ctx, identifier: str, code: str) -> list[bool]:  # type: ignore[no-untyped-def]
    """Two threads, each with its own session, verify ``code`` at the same moment."""
    start = threading.Barrier(2)
    results: list[bool] = []
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            with ctx.db() as db:
                start.wait(timeout=10)
                spent = otp.verify(ctx, db, purpose=PURPOSE, identifier=identifier, code=code)
                db.commit()
                results.append(spent is not None)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return results
