"""The account JSON API: what ``/account`` offers a person, for programs that hold their access token.

Each operation is served by the request pipeline (:mod:`idp.web.pipeline`) with the bearer token
as its caller (:class:`~idp.api.bearer.BearerSurface`), and calls the same account command the
hosted page calls (:mod:`idp.accounts.commands`); only the answers differ: JSON, and RFC 9457
problems instead of pages and redirects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..accounts import commands, email_change, postal_address, profile
from ..accounts.commands import Actor
from ..accounts.language_tags import MAX_LANGUAGE_TAG
from ..accounts.picture import MAX_PICTURE
from ..accounts.reauthentication import MAX_PASSWORD_INPUT
from ..accounts.usernames import MAX_USERNAME, asks_another
from ..accounts.users import MAX_NAME
from ..security.rate_limits import Limit
from ..web.json_response import JSONResponse
from ..web.pipeline import Call, Endpoint, Handler, Needs, endpoint
from .bearer import BEARER
from .bodies import Field, Fields, members_of

CURRENT_PASSWORD_IF_ANY = Field(
    MAX_PASSWORD_INPUT,
    "The password the person signs in with now; required when the account has one.",
    required=False,
)
PROFILE_FIELDS: Fields = {
    "name": Field(MAX_NAME, "The name to show; an empty string removes it.", required=False),
    "given_name": Field(MAX_NAME, "Given (first) name; an empty string removes it.", required=False),
    "family_name": Field(MAX_NAME, "Family (last) name; an empty string removes it.", required=False),
    "preferred_username": Field(
        MAX_USERNAME,
        "A username to sign in with besides the email address or phone number; no one else's. An empty "
        "string removes it.",
        required=False,
    ),
    "locale": Field(
        MAX_LANGUAGE_TAG,
        "The person's language, a BCP 47 tag like `fa-IR`; their pages and messages are in the nearest of "
        "`ui_locales_supported`.",
        required=False,
    ),
    "zoneinfo": Field(64, "An IANA time zone, like `Europe/Berlin`; an empty string removes it.", required=False),
    "picture": Field(
        MAX_PICTURE,
        "The https URL of the person's picture (http only on the loopback interface); an empty string removes it.",
        required=False,
    ),
    "address": Field(
        0,
        "The postal address (OpenID Connect Core §5.1.1), replacing the one kept: the parts left out are "
        "removed, and `{}` removes it. Without `formatted`, one is made from the other parts.",
        required=False,
        members={
            part: Field(length, f"`{part}`; an empty string or leaving it out removes it.", required=False)
            for part, length in postal_address.MAX_LENGTH.items()
        },
    ),
}
PASSWORD_FIELDS: Fields = {
    "current_password": Field(MAX_PASSWORD_INPUT, "The password the person signs in with now."),
    "password": Field(MAX_PASSWORD_INPUT, "The new password; the password policy applies."),
}
PHONE_FIELDS: Fields = {
    "phone": Field(64, "The number in E.164 (+14155550100), or national in the provider's default region."),
    "current_password": CURRENT_PASSWORD_IF_ANY,
}
CODE_FIELDS: Fields = {
    "code": Field(16, "The code sent by SMS to the number waiting for verification."),
}
EMAIL_FIELDS: Fields = {
    "email": Field(320, "The new address; the link that confirms it goes there."),
    "current_password": CURRENT_PASSWORD_IF_ANY,
}
DELETE_FIELDS: Fields = {
    "current_password": CURRENT_PASSWORD_IF_ANY,
}
SET_PASSWORD_FIELDS: Fields = {
    "code": Field(16, "The code emailed by POST /api/account/password/set/code."),
    "password": Field(MAX_PASSWORD_INPUT, "The first password; the password policy applies."),
}


Holder = Call[Actor]


def operation(needs: Needs | None = None) -> Callable[[Handler[Actor]], Endpoint]:
    """Make ``handler`` an endpoint that acts for the token's person."""

    def wrap(handler: Handler[Actor]) -> Endpoint:
        return endpoint(BEARER, needs or Needs(), handler)

    return wrap


def _json(body: Any, status_code: int = 200) -> Response:
    return JSONResponse(body, status_code=status_code, headers={"Cache-Control": "no-store"})


@operation()
def get_account(call: Holder) -> Response:
    return _json(profile.profile_of(call.who.user))


@operation(Needs(PROFILE_FIELDS))
def patch_account(call: Holder) -> Response:
    """Only the members sent change; email and phone change elsewhere, through proof that the
    person holds them. Asking for a username not the person's own spends the address's
    verification budget: whether one is taken is all a refusal tells, but it must not be asked
    without end."""
    if asks_another(call.who.user, call.values.get("preferred_username")):
        call.spend(Limit.VERIFICATION)
    commands.update_profile(call.db, call.who, call.values, members_of(call.values, "address"))
    return _json(profile.profile_of(call.who.user))


@operation()
def list_sessions(call: Holder) -> Response:
    sessions = profile.list_sessions(call.db, call.who.user, call.who.session_id)
    return _json(
        [
            {
                "id": session.id,
                "device": session.device,
                "ip": session.ip,
                "started_at": session.started_at,
                "last_seen_at": session.last_seen_at,
                "current": session.current,
            }
            for session in sessions
        ]
    )


@operation()
def end_session(call: Holder) -> Response:
    """Ending the token's own session revokes the token with the grant made in it."""
    commands.end_session(call.db, call.who, call.request.path_params["session_id"])
    return Response(status_code=204)


@operation()
def end_other_sessions(call: Holder) -> Response:
    """A phone number nobody vouched for since it was added goes too."""
    ended = commands.end_other_sessions(call.ctx, call.db, call.who)
    return _json({"ended": len(ended.sessions), "phone_removed": ended.phone_removed})


@operation(Needs(PASSWORD_FIELDS, limits=(Limit.SIGN_IN,), lock=False))
def change_password(call: Holder) -> Response:
    """Every session but the token's ends, and every grant not made in it is revoked. Each try
    spends the per-address budget for password guesses: the lockout alone would let a stolen
    token hash passwords (and lock the person out) without end. The command takes the person's
    lock once the hashing is done."""
    values = call.values
    commands.change_password(call.ctx, call.db, call.who, values["current_password"], values["password"], call.lock)
    return Response(status_code=204)


@operation(Needs(PHONE_FIELDS, limits=(Limit.VERIFICATION,), lock=False))
def add_phone(call: Holder) -> Response:
    """Send a code to the number once the person gave their current password (an account without
    one: signed in a few minutes ago); it becomes the person's once the code comes back. The
    command takes the person's lock once the password is checked."""
    values = call.values
    password = values.get("current_password", "")
    phone = commands.add_phone(call.ctx, call.db, call.who, values["phone"], password, call.lock)
    return _json({"phone": phone, "expires_in": call.ctx.settings.otp_ttl}, status_code=202)


@operation(Needs(CODE_FIELDS, limits=(Limit.VERIFICATION,)))
def verify_phone(call: Holder) -> Response:
    commands.verify_phone(call.ctx, call.db, call.who, call.values["code"])
    return _json(profile.profile_of(call.who.user))


@operation()
def remove_phone(call: Holder) -> Response:
    """Codes no longer go to the number, and it no longer signs the person in."""
    commands.remove_phone(call.ctx, call.db, call.who)
    return _json(profile.profile_of(call.who.user))


@operation(Needs(EMAIL_FIELDS, limits=(Limit.VERIFICATION,), lock=False))
def change_email(call: Holder) -> Response:
    """A link goes to the new address, or its owner is told when another account has it; the same
    answer either way. The address changes only when the link is followed. The command takes the
    person's lock once the password is checked."""
    values = call.values
    password = values.get("current_password", "")
    email = commands.change_email(call.ctx, call.db, call.who, values["email"], password, call.lock)
    return _json({"email": email, "expires_in": email_change.LINK_LIFETIME}, status_code=202)


@operation(Needs(limits=(Limit.VERIFICATION,)))
def send_password_code(call: Holder) -> Response:
    """The code that setting a first password needs goes to the verified email address."""
    email = commands.send_password_code(call.ctx, call.db, call.who)
    return _json({"email": email, "expires_in": call.ctx.settings.otp_ttl}, status_code=202)


@operation(Needs(SET_PASSWORD_FIELDS, limits=(Limit.VERIFICATION,), lock=False))
def set_password(call: Holder) -> Response:
    """A password the policy refuses leaves the code usable for another try. The command takes the
    person's lock once the hashing is done."""
    commands.set_password(call.ctx, call.db, call.who, call.values["code"], call.values["password"], call.lock)
    return Response(status_code=204)


@operation()
def export_data(call: Holder) -> Response:
    """Everything held about the person, as one JSON document to keep."""
    return _json(commands.export_data(call.db, call.who))


@operation(Needs(DELETE_FIELDS, limits=(Limit.SIGN_IN,), lock=False))
def delete_account(call: Holder) -> Response:
    """The account goes, with every session, grant and token, once the person showed again it is
    them. Each try spends the per-address budget for password guesses, as a password change does.
    The command takes the person's lock once the password is checked."""
    commands.delete_account(call.ctx, call.db, call.who, call.values.get("current_password", ""), call.lock)
    return Response(status_code=204)


async def account(request: Request) -> Response:
    """One route for every method of ``/api/account``, so that a 405 lists every method it takes."""
    methods = {"PATCH": patch_account, "DELETE": delete_account}
    return await methods.get(request.method, get_account)(request)


async def phone(request: Request) -> Response:
    """One route for both methods of ``/api/account/phone``, as for ``/api/account``."""
    return await (remove_phone if request.method == "DELETE" else add_phone)(request)


ROUTES = [
    Route("/account", account, methods=["GET", "PATCH", "DELETE"]),
    Route("/account/export", export_data, methods=["GET"]),
    Route("/account/sessions", list_sessions, methods=["GET"]),
    Route("/account/sessions/end-others", end_other_sessions, methods=["POST"]),
    Route("/account/sessions/{session_id}", end_session, methods=["DELETE"]),
    Route("/account/email", change_email, methods=["POST"]),
    Route("/account/password", change_password, methods=["POST"]),
    Route("/account/password/set/code", send_password_code, methods=["POST"]),
    Route("/account/password/set", set_password, methods=["POST"]),
    Route("/account/phone", phone, methods=["POST", "DELETE"]),
    Route("/account/phone/verify", verify_phone, methods=["POST"]),
]
