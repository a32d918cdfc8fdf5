"""The ``acr`` a sign-in reaches, and when signing in again can reach more (OIDC Core §5.5.1.1)."""

from __future__ import annotations

import pytest

from idp.oauth.assurance import ONE_FACTOR, TWO_FACTORS, acr_of, step_up_reaches


@pytest.mark.parametrize(
    ("amr", "acr"),
    [
        (["pwd"], ONE_FACTOR),
        (["otp"], ONE_FACTOR),
        (["pwd", "otp", "mfa"], TWO_FACTORS),
        (["otp", "otp", "mfa"], TWO_FACTORS),
        (["otp", "sms", "mfa"], TWO_FACTORS),
    ],
    ids=["password", "emailed code", "password and authenticator", "emailed code and authenticator", "two codes"],
)
def test_two_factors_are_what_a_verified_second_factor_makes(amr, acr):
    """An emailed code followed by an authenticator's code is two factors, though RFC 8176 calls
    both ``otp``."""
    assert acr_of(amr) == acr


@pytest.mark.parametrize(
    ("required", "amr", "again"),
    [
        (frozenset({TWO_FACTORS}), ["pwd"], True),
        (frozenset({ONE_FACTOR, TWO_FACTORS}), ["pwd"], False),
        (frozenset({ONE_FACTOR}), ["pwd", "otp", "mfa"], False),
        (frozenset(), ["pwd"], False),
        (None, ["pwd"], False),
    ],
    ids=["one factor, two asked", "already met", "one asked of two", "only unknown levels", "nothing asked"],
)
def test_a_sign_in_is_asked_again_only_when_a_second_factor_would_meet_the_request(required, amr, again):
    assert step_up_reaches(required, amr) is again
