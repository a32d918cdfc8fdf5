"""The authorization challenge endpoint (draft-ietf-oauth-first-party-apps-04 §4.1): a first-party
app's sign-in without a browser, served by :mod:`idp.oauth.first_party`.

The client authenticates as at the token endpoint (§4.1: whoever must authenticate there must
here), except that a public client continuing with an ``auth_session`` may leave its
``client_id`` out (§5.1): the ``auth_session`` names it. The sign-in services' refusals are put
into the draft's JSON errors by :data:`ERRORS`; a spent rate limit is a 429 with ``Retry-After``.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ..accounts.errors import AccountError, Code
from ..context import Context
from ..errors import Refused
from ..oauth import first_party
from ..oauth.client_auth import Credentials
from ..oauth.errors import AccessDenied, BadAuthorizationTarget, InvalidRequest, OAuthError, TemporarilyUnavailable
from ..security.rate_limits import Limit
from ..storage import Client
from ..web.pipeline import Call, Needs, endpoint
from ..web.throttling import account_key
from .client_surface import ClientSurface, Raw
from .responses import json_response, oauth_error

ERRORS: dict[Code, type[OAuthError]] = {
    Code.INVALID_EMAIL: InvalidRequest,
    Code.INVALID_PHONE: InvalidRequest,
    Code.PASSWORD_SIGN_IN_OFF: InvalidRequest,
}
"""The error a refusal of the sign-in services is answered with where it is not ``access_denied``
(the sign-in ended, the email is not verified); too many codes (to the address or number, or the
hour's SMS budget) is a 429 with the wait."""

DESCRIPTIONS: dict[str, str] = {
    "not_an_address": "login_hint is neither an email address nor a phone number",
    "not_served": "no text message can go to this number",
    "too_many_wrong_codes": "the code was wrong too many times: start again",
    "account_locked": "the account is locked for a while after too many failed sign-ins",
    Code.EMAIL_NOT_VERIFIED.value: "the email address of this account is not verified yet",
    Code.PASSWORD_SIGN_IN_OFF.value: "password sign-in is turned off: send the otp sent to login_hint",
}


class ChallengeSurface(ClientSurface):
    """The token endpoint's client surface, with the ``auth_session`` naming a public client and
    the draft's answers to a challenge and to the sign-in services' refusals."""

    def authenticate(self, request: Request, ctx: Context, db: Session, raw: object) -> Client:
        assert isinstance(raw, Raw)
        credentials = raw.credentials
        if isinstance(credentials, Credentials) and credentials.method == "none" and credentials.client_id is None:
            named = first_party.client_of(db, raw.form.get("auth_session"))
            raw = Raw(raw.form, replace(credentials, client_id=named))
        return super().authenticate(request, ctx, db, raw)

    def failed(self, call: Call[Client], error: Refused) -> Response:
        if isinstance(error, first_party.InsufficientAuthorization):
            return json_response(error.answer(), status_code=error.status_code)
        if isinstance(error, BadAuthorizationTarget):
            error = first_party.InvalidSession("the auth_session was already answered")
        if isinstance(error, AccountError):
            error = _oauth_error(error)
        assert isinstance(error, OAuthError)
        return oauth_error(error)


def _oauth_error(error: AccountError) -> OAuthError:
    description = DESCRIPTIONS.get(error.reason, "")
    if error.code == Code.TOO_MANY_CODES:
        return TemporarilyUnavailable(
            "too many codes went to this address or number lately: retry after Retry-After",
            retry_after=error.wait or 60,
        )
    return ERRORS.get(error.code, AccessDenied)(description)


def _challenge(call: Call[Client]) -> Response:
    """A first request starts the sign-in and sends a code; a later one answers its challenge."""
    values, ctx = call.values, call.ctx
    if "auth_session" not in values:
        call.spend(Limit.VERIFICATION)
        first_party.start(ctx, call.db, call.who, values)
    resumed = first_party.resume(call.db, call.who, values["auth_session"])
    if "password" in values:
        call.spend(Limit.SIGN_IN_ACCOUNT, account_key(call.request, resumed.identifier))
        code = first_party.answer_password(ctx, call.db, call.who, resumed, values["password"])
    else:
        code = first_party.answer_code(ctx, call.db, call.who, resumed, values["otp"])
    return json_response({"authorization_code": code})


authorization_challenge = endpoint(
    ChallengeSurface(), Needs(fields=first_party.check_form, limits=(Limit.SIGN_IN,), lock=False), _challenge
)
