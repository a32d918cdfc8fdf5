"""Writing the audit log: one event per thing a person or the system did, in the caller's transaction.

An event is written with what caused it, so it exists exactly when that committed. It records
facts an operator may need later (who, what, when, from where, which client, how it ended) and
never a secret: no password, code or token goes into an event, and recipients are masked.

A service records its events itself, deep in the call that did the thing (a code leaves only
through :func:`idp.accounts.otp.deliver`, which records ``code_sent``), without knowing the request:
the request's transaction carries where it came from (:func:`set_origin`), and every event written
in it says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from .storage import AuditEvent, User, now

log = logging.getLogger("idp.audit")

MAX_USER_AGENT = 512
_SECRET_WORDS = ("password", "secret", "token", "code")
_ORIGIN = "audit_origin"


class Event(StrEnum):
    """The names events are stored under; a misspelt one is a type error, not a row no query finds."""

    ACCOUNT_DELETED = "account_deleted"
    ACCOUNT_LOCKED = "account_locked"
    ADMIN_ACTION = "admin_action"
    AUTHORIZATION_CODE_REUSED = "authorization_code_reused"
    CLIENT_AUTHENTICATION_FAILED = "client_authentication_failed"
    CODE_SENT = "code_sent"
    CODE_VERIFIED = "code_verified"
    CONSENT_GIVEN = "consent_given"
    CONSENT_REFUSED = "consent_refused"
    EMAIL_CHANGE_REQUESTED = "email_change_requested"
    EMAIL_CHANGED = "email_changed"
    EMAIL_VERIFIED = "email_verified"
    MESSAGE_FAILED = "message_failed"
    PASSWORD_CHANGED = "password_changed"
    PERSONAL_DATA_EXPORTED = "personal_data_exported"
    PASSWORD_RESET = "password_reset"
    PASSWORD_RESET_REQUESTED = "password_reset_requested"
    PASSWORD_SET = "password_set"
    PHONE_REMOVED = "phone_removed"
    PHONE_VERIFIED = "phone_verified"
    PROFILE_UPDATED = "profile_updated"
    RATE_LIMITED = "rate_limited"
    REAUTHENTICATION = "reauthentication"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"
    REGISTRATION = "registration"
    SECOND_FACTOR_DISABLED = "second_factor_disabled"
    SECOND_FACTOR_ENABLED = "second_factor_enabled"
    SECOND_FACTOR_REQUESTED = "second_factor_requested"
    SESSION_ENDED = "session_ended"
    SIGN_IN = "sign_in"
    SIGN_OUT = "sign_out"
    TERMS_ACCEPTED = "terms_accepted"
    TOKEN_REVOKED = "token_revoked"
    TOKENS_ISSUED = "tokens_issued"
    VERIFICATION_RESENT = "verification_resent"


@dataclass(frozen=True)
class Origin:
    """Where the request of a transaction came from, as its events keep it."""

    ip: str | None
    user_agent: str | None


def set_origin(db: Session, origin: Origin | Callable[[], Origin]) -> None:
    """Every event recorded in ``db`` from now on comes from ``origin`` unless it names its own.
    Given as a function, it is called once, when first needed: most requests record nothing, and
    working out a request's address was a fifteenth of one served from memory."""
    db.info[_ORIGIN] = origin


def origin(db: Session) -> Origin:
    """Where the request of ``db``'s transaction came from, for a service that keeps it on a row of
    its own (a sign-in session made without a browser); unknown outside a request."""
    found = db.info.get(_ORIGIN)
    if callable(found):
        found = db.info[_ORIGIN] = found()
    return found if isinstance(found, Origin) else Origin(None, None)


def record(
    db: Session,
    event: Event,
    *,
    outcome: str,
    user_id: str | None = None,
    client_id: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Add an event to the caller's transaction.

    A ``detail`` key that names a secret is refused outright: passing a code or a password here is
    a programming error, and failing loudly in tests beats a secret quietly kept in the database.
    """
    row = _row(db, event, outcome, user_id, client_id, ip, user_agent, detail)
    db.add(AuditEvent(**row))


def _row(
    db: Session,
    event: Event,
    outcome: str,
    user_id: str | None,
    client_id: str | None,
    ip: str | None,
    user_agent: str | None,
    detail: Mapping[str, Any] | None,
) -> dict[str, Any]:
    for key in detail or {}:
        if any(word in key.lower() for word in _SECRET_WORDS):
            raise ValueError(f"audit detail {key!r} looks like a secret; record facts, never secrets")
    if ip is None and user_agent is None:
        came_from = origin(db)
        ip, user_agent = came_from.ip, came_from.user_agent
    return {
        "at": now(),
        "event": event,
        "outcome": outcome,
        "user_id": user_id,
        "client_id": client_id,
        "ip": ip,
        "user_agent": user_agent[:MAX_USER_AGENT] if user_agent is not None else None,
        "detail": dict(detail) if detail is not None else None,
    }


class AuditQueue:
    """Events of the token endpoint, written in batches by :func:`run_audit_writer`.

    A token request writes at most a row or two of its own; a row more for its event in the same
    transaction cost it a third of its time, and a ``client_credentials`` request, which writes
    nothing else, a transaction of its own (on SQLite, every token request queued behind one
    writer). Such an event is kept with the request's session instead, handed here only if that
    session commits (dropped if it rolls back, so an event still exists exactly when what it
    records does), and written within :data:`AUDIT_BATCH_SECONDS`, in one transaction with every
    other event queued by then; a process that stops cleanly writes what it holds first, one that
    is killed loses at most that long.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._key = object()
        """Where a session keeps this queue's events until it commits."""
        sqlalchemy_event.listen(sessions, "after_commit", self._committed)
        sqlalchemy_event.listen(sessions, "after_transaction_end", self._drop_uncommitted)

    def record(
        self,
        db: Session,
        event: Event,
        *,
        outcome: str,
        user_id: str | None = None,
        client_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """As :func:`record`: written in the next batch once ``db`` commits."""
        if not db.in_transaction():
            db.begin()  # what commits or rolls back next is this transaction: no connection needed yet
        db.info.setdefault(self._key, []).append(_row(db, event, outcome, user_id, client_id, None, None, detail))

    def _committed(self, db: Session) -> None:
        rows = db.info.pop(self._key, None)
        if rows:
            with self._lock:
                self._rows.extend(rows)

    def _drop_uncommitted(self, db: Session, transaction: SessionTransaction) -> None:
        """The events of a session's transaction that ended without committing are not written."""
        if transaction.parent is None:
            db.info.pop(self._key, None)

    def write(self) -> int:
        """Write what is queued, in one transaction; how many events that was. What a database
        refuses stays queued for the next time, up to :data:`MAX_QUEUED` events."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        try:
            with self.sessions.begin() as db:
                _forget_the_deleted(db, rows)
                db.execute(insert(AuditEvent), rows)
        except Exception:
            with self._lock:
                self._rows = (rows + self._rows)[-MAX_QUEUED:]
            raise
        return len(rows)


AUDIT_BATCH_SECONDS = 0.5
MAX_QUEUED = 100_000


def _forget_the_deleted(db: Session, rows: list[dict[str, Any]]) -> None:
    """An event about a person deleted since it was queued is kept as deletion keeps the others
    (:mod:`idp.accounts.deletion`): without where it came from or its detail."""
    people = {row["user_id"] for row in rows if row["user_id"] is not None}
    if not people:
        return
    present = set(db.scalars(select(User.id).where(User.id.in_(people))))
    for row in rows:
        if row["user_id"] is not None and row["user_id"] not in present:
            row.update(ip=None, user_agent=None, detail=None)


async def run_audit_writer(queue: AuditQueue, stop: asyncio.Event) -> None:
    """Write the queue every :data:`AUDIT_BATCH_SECONDS` while the process serves, and once more
    when it stops; a batch the database refuses is tried again with the next."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), AUDIT_BATCH_SECONDS)
        try:
            await asyncio.to_thread(queue.write)
        except Exception as exc:  # noqa: BLE001 - a database outage must not end the writer
            log.error("audit events not written yet: %s", type(exc).__name__)
        if stop.is_set():
            return


def mask(recipient: str) -> str:
    """Enough of an email address or phone number to tell whose it is, not enough to use it."""
    if "@" in recipient:
        local, _, domain = recipient.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(recipient) > 10:
        return f"{recipient[:6]}***{recipient[-4:]}"
    return f"{recipient[:3]}***{recipient[-2:]}"
