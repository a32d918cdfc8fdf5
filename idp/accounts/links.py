"""Single-use links sent by email: verifying an address, resetting a password, confirming a new address.

The token travels only in the link; the database keeps its SHA-256 digest, so a copy of the table
opens nothing. A link is spent by one conditional UPDATE (unused and unexpired at that instant), so
two requests racing with one link cannot both use it, however many processes serve them. The
link's person is locked first (:func:`~.users.lock_user`): what spending a link leads to (a new
password, a new address) spends the person's other links and ends sessions, and two of them at once
must queue on the person rather than each hold a link the other is waiting to spend.
"""

from __future__ import annotations

from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..security.digests import token_digest
from ..storage import ActionToken, add_secret, now, spend_once
from .codes_vocabulary import Purpose
from .users import lock_user

MAX_TOKEN = 100


def issue(
    db: Session,
    purpose: Purpose,
    user_id: str,
    email: str,
    lifetime: int,
    *,
    authorization_request_id: str | None = None,
    browser_hash: str | None = None,
    phone: str | None = None,
) -> str:
    """A new link's token for the caller to send to ``email``; it is never stored."""
    _, token = add_secret(
        db,
        ActionToken,
        lifetime,
        purpose=purpose,
        user_id=user_id,
        email=email,
        authorization_request_id=authorization_request_id,
        browser_hash=browser_hash,
        phone=phone,
    )
    return token


def url(issuer: str, path: str, token: str) -> str:
    return f"{issuer}{path}?{urlencode({'token': token})}"


def find(db: Session, purpose: Purpose, token: str | None) -> ActionToken | None:
    """The live link of ``purpose`` the token belongs to, left unspent: for a page that shows its
    form before the link is used."""
    if not token or len(token) > MAX_TOKEN:
        return None
    link = db.get(ActionToken, token_digest(token))
    if link is None or link.purpose != purpose or link.used_at is not None or link.expires_at <= now():
        return None
    return link


def spend(db: Session, purpose: Purpose, token: str | None) -> ActionToken | None:
    """The link, now spent; ``None`` for one that is unknown, used, expired or of another purpose.

    The link's person is locked before the link is spent, and stays locked: the caller changes the
    account under that lock. A caller that then refuses the link rolls back to leave it usable, or
    commits to spend it.
    """
    if not token or len(token) > MAX_TOKEN:
        return None
    digest = token_digest(token)
    owner = db.scalar(select(ActionToken.user_id).where(ActionToken.token_hash == digest))
    if owner is None or lock_user(db, owner) is None:
        return None
    stamp = now()
    spent = spend_once(
        db,
        ActionToken,
        ActionToken.token_hash == digest,
        ActionToken.purpose == purpose,
        ActionToken.used_at.is_(None),
        ActionToken.expires_at > stamp,
        used_at=stamp,
    )
    return db.get(ActionToken, digest) if spent else None


def cancel(db: Session, user_id: str, purpose: Purpose | None = None) -> None:
    """Spend every live link of the person's, or only those of ``purpose``: a newer link replaces
    them, or the account changed so that they must no longer work."""
    query = update(ActionToken).where(ActionToken.user_id == user_id, ActionToken.used_at.is_(None))
    if purpose is not None:
        query = query.where(ActionToken.purpose == purpose)
    db.execute(query.values(used_at=now()).execution_options(synchronize_session=False))
