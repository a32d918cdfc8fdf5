"""Taking an account back from whoever made it, when the owner of its address first proves it.

Anyone can register any address and choose its password; where ``IDP_REQUIRE_VERIFIED_EMAIL`` is
off they can sign in too, and add a phone (proven with their own phone), an authenticator app,
a name, consents, a change of address waiting for its link. The first proof of the address by
someone who did not choose the password (a sign-in code sent to it, a reset link) is its owner
arriving, and nothing the account held before that proof stays: a phone would sign the stranger in
by code, an authenticator or recovery code would stand in the owner's way, a session, refresh token
or pending change of address would keep them in, and a name or consent is theirs, not the owner's.
Only the browser that chose the password verifies without it (:mod:`.registration`); a link opened
elsewhere asks for that password instead, and whoever gives it is not a stranger to the account.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from ..sso import sign_out_everywhere
from ..storage import Consent, PasswordHistory, User, now
from . import links, totp


def take_back(db: Session, user: User) -> None:
    """Leave the account with its address only; the caller holds the person's row lock
    (:func:`~.users.lock_user`) and then marks the address verified."""
    user.password_hash = None
    user.name = None
    user.phone = None
    user.phone_verified = False
    user.mfa_method = None
    user.totp_secret = None
    user.totp_last_step = None
    user.registration_browser_hash = None
    user.updated_at = now()
    totp.spend_recovery_codes(db, user)
    db.execute(delete(PasswordHistory).where(PasswordHistory.user_id == user.id))
    db.execute(delete(Consent).where(Consent.user_id == user.id))
    links.cancel(db, user.id)
    sign_out_everywhere(db, user.id)
    db.flush()
