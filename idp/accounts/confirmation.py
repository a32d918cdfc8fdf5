"""When the person last showed who they are, and the phone numbers that came after it.

A session proves only that someone signed in once. The person proves themselves again by giving
their password (at sign-in, or to the "confirm it is you" check of :mod:`.reauthentication`) or by
following a reset link: :func:`confirm_identity` notes the time in ``users.identity_confirmed_at``.
A number verified from a session notes its own time in ``users.phone_verified_at``.

A number verified at or after the last confirmation (times are whole seconds, so the same second
counts as after) was added on the strength of a session that nobody has vouched for since. A
password reset and "sign out everywhere" take such a number off (:func:`drop_unconfirmed_phone`),
so that whoever held the session cannot sign back in by SMS code once the owner has taken the
account back. A number the account came with (registration, the command line) has no
``phone_verified_at`` and stays.

Two numbers stay even then: the one SMS two-step sign-in sends its codes to (taking it off would
turn the second factor off, which takes the password or a fresh sign-in, not a session), and the
only way into an account with no email address.
"""

from __future__ import annotations

from ..storage import User, now
from .codes_vocabulary import SecondFactorMethod


def confirm_identity(user: User) -> None:
    user.identity_confirmed_at = now()


def phone_unconfirmed(user: User) -> bool:
    """Whether the number was verified from a session at or after the person last showed who they are."""
    if user.phone is None or user.phone_verified_at is None:
        return False
    return user.identity_confirmed_at is None or user.phone_verified_at >= user.identity_confirmed_at


def drop_unconfirmed_phone(user: User) -> str | None:
    """Take the number off if :func:`phone_unconfirmed` and it may go; the number taken off."""
    if not phone_unconfirmed(user) or user.mfa_method == SecondFactorMethod.SMS or user.email is None:
        return None
    phone = user.phone
    user.phone = None
    user.phone_verified = False
    user.phone_verified_at = None
    user.updated_at = now()
    return phone
