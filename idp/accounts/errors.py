"""The one family of errors the account services raise: a code, a reason within it, and data.

Services never write prose for people. Each surface turns an error into its own words from a table
of its own: the hosted pages into a sentence next to the form, the account API into an RFC 9457
problem whose type is the :class:`Code`. The ``reason`` tells apart refusals that share a code
(a password too short or too common); ``data`` carries what the sentence needs (the seconds to wait,
the minimum length).

``keeps_changes`` says whether what the request wrote before the error must be committed: a wrong
password or code is counted (and audited) so that guessing ends in a lockout, while a refused new
password leaves nothing behind. The request's one unit of work reads it; no caller has to know.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from ..errors import Refused


class Code(StrEnum):
    """What went wrong, as the account API names its problem types."""

    INVALID_NAME = "invalid-name"
    WRONG_PASSWORD = "wrong-password"
    ACCOUNT_LOCKED = "account-locked"
    SIGN_IN_REQUIRED = "sign-in-required"
    PASSWORD_REJECTED = "password-rejected"
    PASSWORDS_DIFFER = "passwords-differ"
    INVALID_PHONE = "invalid-phone"
    PHONE_UNAVAILABLE = "phone-unavailable"
    NO_PENDING_PHONE = "no-pending-phone"
    NO_PHONE = "no-phone"
    PHONE_NEEDED = "phone-needed"
    WRONG_CODE = "wrong-code"
    TOO_MANY_CODES = "too-many-codes"
    INVALID_EMAIL = "invalid-email"
    TOO_MANY_EMAILS = "too-many-emails"
    PASSWORD_ALREADY_SET = "password-already-set"
    NO_VERIFIED_EMAIL = "no-verified-email"
    SESSION_NOT_FOUND = "session-not-found"
    SECOND_FACTOR = "second-factor"
    SIGN_IN_ENDED = "sign-in-ended"
    SIGN_IN_FAILED = "sign-in-failed"
    PASSWORD_SIGN_IN_OFF = "password-sign-in-off"
    EMAIL_NOT_VERIFIED = "email-not-verified"
    INVALID_LINK = "invalid-link"
    EMAIL_TAKEN = "email-taken"
    ACCOUNT_CHANGED = "account-changed"
    INVALID_LANGUAGE = "invalid-language"
    TERMS_NOT_ACCEPTED = "terms-not-accepted"
    INVALID_USERNAME = "invalid-username"
    USERNAME_TAKEN = "username-taken"
    UNKNOWN_TIME_ZONE = "unknown-time-zone"
    INVALID_PICTURE = "invalid-picture"
    INVALID_ADDRESS = "invalid-address"


class AccountError(Refused):
    """A refusal of an account operation; see the module's docstring."""

    code: ClassVar[Code]
    fixed_reason: ClassVar[str | None] = None
    """The reason a refusal always gives, where its class is the only one of its code to give it."""

    def __init__(self, reason: str | None = None, **data: int | str | None) -> None:
        reason = reason or self.fixed_reason
        self.reason = reason or self.code.value
        self.data = data
        super().__init__(f"{self.code.value}: {self.reason}" if reason else self.code.value)

    @property
    def wait(self) -> int | None:
        """Seconds until asking again may work; ``None`` when waiting would not help."""
        wait = self.data.get("wait")
        return wait if isinstance(wait, int) else None


class PasswordsDiffer(AccountError):
    """The new password and its confirmation are not the same."""

    code = Code.PASSWORDS_DIFFER


class InvalidEmail(AccountError):
    """Not an email address; the reason says on which form, for its sentence."""

    code = Code.INVALID_EMAIL


class SessionNotFound(AccountError):
    """None of the person's live sessions has this id."""

    code = Code.SESSION_NOT_FOUND


class NoPendingPhone(AccountError):
    """No number waits for its code."""

    code = Code.NO_PENDING_PHONE


class WrongCode(AccountError):
    """The code is not the one sent, or it expired; the try counted, and is kept."""

    code = Code.WRONG_CODE
    keeps_changes = True


class AccountChanged(AccountError):
    """What a change was checked against (the password, its history) changed before the change
    could be made: the slow checks run before the person's row is locked, and another request got
    the lock first. Nothing is written; trying again checks against the account as it is now."""

    code = Code.ACCOUNT_CHANGED
