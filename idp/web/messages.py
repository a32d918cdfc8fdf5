"""What a person reads when an account operation is refused: one sentence for each code and
reason of :mod:`idp.accounts.errors`, the same next to a form and in an API problem's ``detail``.

An operation that can fail in a new way adds its sentence here; the pages' table (the status of
the page, :mod:`idp.pages.surface`) and the API's (the problem's status and title,
:mod:`idp.api.problems`) each add a row for a new code. The sentences are English, marked for the
catalogs: the pages show them in the reader's language, the API as they are.
"""

from __future__ import annotations

import math

from ..accounts.errors import AccountError, Code
from ..catalogs import N_
from ..languages import Language

SENTENCES: dict[tuple[Code, str], str] = {
    (Code.INVALID_NAME, "too_long"): N_("The name can have at most {max_length} characters."),
    (Code.INVALID_LANGUAGE, "invalid-language"): N_(
        "A language is a tag of at most {max_length} characters, like en, fa or fa-IR."
    ),
    (Code.INVALID_NAME, "control_characters"): N_(
        "The name cannot hold control characters or text-direction overrides."
    ),
    (Code.INVALID_USERNAME, "too_long"): N_("The username can have at most {max_length} characters."),
    (Code.INVALID_USERNAME, "not_printable"): N_("The username cannot hold line breaks or control characters."),
    (Code.USERNAME_TAKEN, "username-taken"): N_("That username is taken. Choose another one."),
    (Code.UNKNOWN_TIME_ZONE, "unknown-time-zone"): N_(
        "That is not a time zone. Choose one from the list, like Europe/Berlin."
    ),
    (Code.INVALID_PICTURE, "too_long"): N_("The picture's address can have at most {max_length} characters."),
    (Code.INVALID_PICTURE, "not_a_url"): N_("Enter the web address of a picture, like https://example.com/me.jpg."),
    (Code.INVALID_PICTURE, "not_https"): N_("The picture's address must start with https://."),
    (Code.INVALID_ADDRESS, "too_long"): N_("That part of the address can have at most {max_length} characters."),
    (Code.INVALID_ADDRESS, "control_characters"): N_("The address cannot hold control characters."),
    (Code.INVALID_ADDRESS, "not_text"): N_("Each part of the address must be text."),
    (Code.INVALID_ADDRESS, "not_an_object"): N_("An address is made of these parts: {parts}."),
    (Code.INVALID_ADDRESS, "not_a_part"): N_("An address has no part named {part}."),
    (Code.WRONG_PASSWORD, "wrong_password"): N_("Your current password is not right."),
    (Code.WRONG_PASSWORD, "registration_password"): N_(
        "That is not the password chosen when this account was registered."
    ),
    (Code.ACCOUNT_LOCKED, "account_locked"): N_(
        "Too many wrong passwords: your account is locked for {minutes} more minutes. "
        "Resetting your password ends the lock at once."
    ),
    (Code.SIGN_IN_REQUIRED, "sign_in_too_old"): N_("Sign in again to make this change: you signed in too long ago."),
    (Code.PASSWORD_REJECTED, "too_short"): N_("Use at least {min_length} characters."),
    (Code.PASSWORD_REJECTED, "too_long"): N_("Use at most {max_length} characters."),
    (Code.PASSWORD_REJECTED, "too_common"): N_("This password is too common. Choose one that is harder to guess."),
    (Code.PASSWORD_REJECTED, "is_email"): N_("Your password cannot be your email address."),
    (Code.PASSWORD_REJECTED, "used_before"): N_(
        "Choose a password you have not used for your last {history} passwords."
    ),
    (Code.PASSWORD_REJECTED, "breached"): N_("This password has appeared in a data breach. Choose another one."),
    (Code.PASSWORDS_DIFFER, "passwords-differ"): N_("The two new passwords are not the same."),
    (Code.PASSWORDS_DIFFER, "not_the_same"): N_("The two passwords are not the same."),
    (Code.INVALID_PHONE, "too_long"): N_("That phone number is too long."),
    (Code.INVALID_PHONE, "not_a_number"): N_(
        "That is not a phone number; write it with its country code, like +14155550100."
    ),
    (Code.INVALID_PHONE, "no_such_number"): N_(
        "That phone number does not exist; check the digits and the country code."
    ),
    (Code.INVALID_PHONE, "already_yours"): N_("That number is already verified on your account."),
    (Code.INVALID_PHONE, "not_served"): N_("We cannot send text messages to numbers in that country."),
    (Code.PHONE_UNAVAILABLE, "phone-unavailable"): N_("This phone number cannot be added to your account."),
    (Code.NO_PENDING_PHONE, "no-pending-phone"): N_("No phone number is waiting for its code. Add one first."),
    (Code.NO_PHONE, "no-phone"): N_("There is no phone number on your account."),
    (Code.SECOND_FACTOR, "no_method"): N_("Choose an authenticator app, email or SMS."),
    (Code.SECOND_FACTOR, "enrolment_expired"): N_("This setup has expired. Please start again."),
    (Code.SECOND_FACTOR, "already_off"): N_("Two-step sign-in is already off."),
    (Code.SECOND_FACTOR, "not_on"): N_("Turn on two-step sign-in first."),
    (Code.SECOND_FACTOR, "email_unverified"): N_(
        "Verify your email address first: codes can only go to a verified address."
    ),
    (Code.SECOND_FACTOR, "sms_unverified"): N_(
        "Add and verify a phone number first: codes can only go to a verified number."
    ),
    (Code.PHONE_NEEDED, "second_factor"): N_(
        "Two-step sign-in sends its codes to this number. Turn it off under Two-step verification before "
        "removing the number."
    ),
    (Code.PHONE_NEEDED, "second_factor_swap"): N_(
        "Two-step sign-in sends its codes to your number. Turn it off under Two-step verification before "
        "changing the number."
    ),
    (Code.PHONE_NEEDED, "only_sign_in"): N_(
        "Your phone number is how you sign in. Add an email address before removing it."
    ),
    (Code.WRONG_CODE, "wrong-code"): N_("That code is not right, or it has expired. Check it, or ask for a new one."),
    (Code.TOO_MANY_CODES, "too-many-codes"): N_(
        "Too many codes were sent. You can ask for a new one in {wait} seconds."
    ),
    (Code.TOO_MANY_CODES, "sms_budget"): N_(
        "We cannot send text messages right now. Please try again in {minutes} minutes."
    ),
    (Code.INVALID_EMAIL, "not_an_email"): N_("Enter an email address, like name@example.com."),
    (Code.INVALID_EMAIL, "same_email"): N_("That is already your email address."),
    (Code.INVALID_EMAIL, "not_an_address"): N_("That is not an email address."),
    (Code.INVALID_EMAIL, "no_email"): N_("Enter your email address, like name@example.com."),
    (Code.TOO_MANY_EMAILS, "too-many-emails"): N_(
        "You asked for several links to this address in a short time. You can ask again in {wait} seconds."
    ),
    (Code.PASSWORD_ALREADY_SET, "password-already-set"): N_(
        "Your account already has a password. Change it on your account page."
    ),
    (Code.NO_VERIFIED_EMAIL, "no-verified-email"): N_(
        "Add and verify an email address first: the code to set a password goes there."
    ),
    (Code.SESSION_NOT_FOUND, "session-not-found"): N_("There is no such session."),
    (Code.SIGN_IN_FAILED, "sign-in-failed"): N_("The email, phone number or password is not right."),
    (Code.PASSWORD_SIGN_IN_OFF, "password-sign-in-off"): N_(
        "Signing in with a password is turned off. Sign in with a code sent to your email or phone."
    ),
    (Code.EMAIL_NOT_VERIFIED, "email-not-verified"): N_(
        "Verify your email address first: follow the link in the email we sent you."
    ),
    (Code.INVALID_LINK, "verification"): N_(
        "This link to verify your email address is not valid: it was already used, it expired, or it is "
        "incomplete. Sign in to ask for a new one."
    ),
    (Code.TOO_MANY_EMAILS, "verification_links"): N_(
        "You asked for several links in a short time. You can ask again in {wait} seconds."
    ),
    (Code.INVALID_LINK, "reset"): N_(
        "This link to reset your password is not valid: it was already used, it expired, or it is incomplete. "
        "Ask for a new one."
    ),
    (Code.INVALID_LINK, "email_change"): N_(
        "This link to change your email address is not valid: it was already used, it expired, or it is "
        "incomplete. Sign in and ask for a new one."
    ),
    (Code.EMAIL_TAKEN, "email-taken"): N_(
        "This email address now belongs to another account, so yours did not change."
    ),
    (Code.SIGN_IN_ENDED, "too_many_wrong_codes"): N_(
        "That was one wrong code too many, so this sign-in has ended. Please start again."
    ),
    (Code.SIGN_IN_ENDED, "account_locked"): N_(
        "Too many failed sign-ins: your account is locked for {minutes} more minutes. "
        "Resetting your password ends the lock at once."
    ),
    (Code.TERMS_NOT_ACCEPTED, "terms-not-accepted"): N_("Accept the terms to create an account."),
    (Code.ACCOUNT_CHANGED, "account-changed"): N_(
        "Your account changed while we were checking this, perhaps from another window. Please try again."
    ),
}


def message(error: AccountError, language: Language | None = None) -> str:
    """The sentence for ``error`` in ``language`` (English when none), its data filled in (a wait
    also in whole minutes)."""
    data = dict(error.data)
    if error.wait is not None:
        data["minutes"] = math.ceil(error.wait / 60)
    sentence = SENTENCES[error.code, error.reason]
    return language.text(sentence, **data) if language is not None else sentence.format(**data)
