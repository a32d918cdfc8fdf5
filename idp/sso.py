"""Single sign-on sessions: a browser that signed in once is not asked again until it ends.

The cookie carries a 256-bit secret; the database keeps only its digest, and the session's
public ``id`` is what ID tokens call ``sid``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from . import audit
from .audit import Event
from .metrics import SIGN_INS
from .security.digests import new_id, new_token, token_digest
from .storage import BrowserSession, Grant, User, now, revoke_grants

LAST_SEEN_RESOLUTION = 60


@dataclass(frozen=True)
class ActiveSession:
    session: BrowserSession
    user: User


def start_session(
    db: Session,
    user: User,
    *,
    amr: list[str],
    ip: str | None,
    user_agent: str | None,
    lifetime: int,
    auth_time: int | None = None,
    client_id: str | None = None,
) -> tuple[BrowserSession, str]:
    """Returns the session, which ends ``lifetime`` seconds from now however much it is used, and
    the cookie value, which is never stored. The sign-in is recorded, as ``client_id``'s when the
    person came from an application.

    ``auth_time`` is when the person authenticated, when that was before now (a password typed at
    registration). A sign-in is a proof the account is in use: a registration that was waiting
    for one is no longer removed by cleanup, and its verification links sign in no browser.
    """
    token = new_token()
    stamp = now()
    if user.registration_browser_hash is not None:
        user.registration_browser_hash = None
    session = BrowserSession(
        id=new_id(),
        token_hash=token_digest(token),
        user_id=user.id,
        auth_time=stamp if auth_time is None else auth_time,
        amr=amr,
        created_at=stamp,
        last_seen_at=stamp,
        expires_at=stamp + lifetime,
        ip=(ip or "")[:64] or None,
        user_agent=(user_agent or "")[:512] or None,
    )
    db.add(session)
    db.flush()
    audit.record(db, Event.SIGN_IN, outcome="success", user_id=user.id, client_id=client_id, detail={"amr": amr})
    SIGN_INS.labels(method=_method(amr), outcome="success").inc()
    return session, token


def _method(amr: list[str]) -> str:
    """How a sign-in was made, as the sign-in metric names it."""
    if "mfa" in amr:
        return "second_factor"
    return "password" if "pwd" in amr else "code"


def find_session(db: Session, cookie: str | None, *, idle_timeout: int | None) -> ActiveSession | None:
    """The live session the cookie names, unless nobody used it for ``idle_timeout`` seconds.

    Only a lookup: a request served to the session's person notes its use (:func:`note_use`).
    """
    if not cookie or len(cookie) > 100:
        return None
    stamp = now()
    row = db.execute(
        select(BrowserSession, User)
        .join(User, User.id == BrowserSession.user_id)
        .where(
            BrowserSession.token_hash == token_digest(cookie),
            BrowserSession.ended_at.is_(None),
            BrowserSession.expires_at > stamp,
            User.disabled.is_(False),
        )
    ).first()
    if row is None:
        return None
    session, user = row
    if idle_timeout is not None and stamp - session.last_seen_at >= idle_timeout:
        return None
    return ActiveSession(session=session, user=user)


def note_use(db: Session, session: BrowserSession) -> None:
    """Note that a request was served in ``session``: what its idle timeout and the person's list of
    sessions go by.

    At most once every ``LAST_SEEN_RESOLUTION`` seconds, so that a browser's every request is not a
    write; a session in use therefore looks up to that much older than it is, which an idle timeout
    of minutes absorbs. The write is the session row's: a request that takes the person's row lock
    notes its use after that, as everything that ends sessions locks the person first.
    """
    stamp = now()
    if stamp - session.last_seen_at >= LAST_SEEN_RESOLUTION:
        session.last_seen_at = stamp


def end_session(db: Session, session_id: str) -> None:
    """Ending a session revokes every grant made in it, with their refresh tokens."""
    db.execute(
        update(BrowserSession)
        .where(BrowserSession.id == session_id, BrowserSession.ended_at.is_(None))
        .values(ended_at=now())
    )
    revoke_grants(db, Grant.session_id == session_id)


def sign_out(db: Session, active: ActiveSession, client_id: str | None) -> None:
    """The person signed out of this browser, at ``client_id``'s request when an application asked."""
    end_session(db, active.session.id)
    audit.record(
        db,
        Event.SIGN_OUT,
        outcome="success",
        user_id=active.user.id,
        client_id=client_id,
        detail={"session_id": active.session.id},
    )


def sign_out_everywhere(db: Session, user_id: str, *, keep_session_id: str | None = None) -> int:
    """End every live session of the person but ``keep_session_id`` and revoke every grant not made
    in it, sessionless (offline) ones included; returns how many sessions ended."""
    live = select(BrowserSession.id).where(BrowserSession.user_id == user_id, BrowserSession.ended_at.is_(None))
    others = Grant.user_id == user_id
    if keep_session_id is not None:
        live = live.where(BrowserSession.id != keep_session_id)
        others = others & or_(Grant.session_id.is_(None), Grant.session_id != keep_session_id)
    session_ids = list(db.scalars(live))
    for session_id in session_ids:
        end_session(db, session_id)
    revoke_grants(db, others)
    return len(session_ids)
