"""The OpenAPI 3.1 description of the account API, served at ``/api/account/openapi.json``.

Request body schemas come from the very :data:`~idp.api.bodies.Fields` the endpoints check, and
the problem types from :data:`~idp.api.problems.KINDS`, so the document says what the code does.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..accounts import postal_address
from ..accounts.codes_vocabulary import SecondFactorMethod
from ..web.json_response import JSONResponse
from ..web.request import context
from .account import (
    CODE_FIELDS,
    DELETE_FIELDS,
    EMAIL_FIELDS,
    PASSWORD_FIELDS,
    PHONE_FIELDS,
    PROFILE_FIELDS,
    SET_PASSWORD_FIELDS,
)
from .bearer import REQUIRED_SCOPE
from .bodies import JSON_TYPE, Fields, json_schema
from .problems import KINDS, MEDIA_TYPE

PATH = "/account/openapi.json"
PROBLEM = {"$ref": "#/components/schemas/Problem"}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}


def _sent(to: str, about_to: str, what: str) -> dict[str, Any]:
    """The answer to a request that sent a code or link: where it went and for how long it holds."""
    return {
        "type": "object",
        "required": [to, "expires_in"],
        "additionalProperties": False,
        "properties": {
            to: {"type": "string", "description": about_to},
            "expires_in": {"type": "integer", "description": f"Seconds the {what} stays valid."},
        },
    }


_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri-reference"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "description": "With `invalid-body`: each member of the body that is wrong.",
                "items": {
                    "type": "object",
                    "required": ["pointer", "detail"],
                    "properties": {
                        "pointer": {"type": "string", "description": "RFC 6901 JSON Pointer into the body."},
                        "detail": {"type": "string"},
                    },
                },
            },
            "retry_after": {"type": "integer", "description": "With a 429: seconds to wait."},
        },
    },
    "Profile": {
        "type": "object",
        "required": [
            "sub",
            "email",
            "email_verified",
            "phone",
            "phone_verified",
            "name",
            "given_name",
            "family_name",
            "preferred_username",
            "locale",
            "zoneinfo",
            "picture",
            "address",
            "mfa_method",
        ],
        "additionalProperties": False,
        "properties": {
            "sub": {"type": "string", "description": "The person's id, as `sub` in their tokens."},
            "email": {"type": ["string", "null"]},
            "email_verified": {"type": "boolean"},
            "phone": {"type": ["string", "null"], "description": "E.164."},
            "phone_verified": {"type": "boolean"},
            "name": {"type": ["string", "null"]},
            "given_name": {"type": ["string", "null"]},
            "family_name": {"type": ["string", "null"]},
            "preferred_username": {
                "type": ["string", "null"],
                "description": "A username the person may sign in with; no two people have the same.",
            },
            "locale": {
                "type": ["string", "null"],
                "description": (
                    "The person's language, a BCP 47 tag; the pages use the nearest of `ui_locales_supported`. "
                    "null: their browser's, else the provider's default."
                ),
            },
            "zoneinfo": {"type": ["string", "null"], "description": "An IANA time zone."},
            "picture": {"type": ["string", "null"], "description": "The https URL of the person's picture."},
            "address": {
                "type": ["object", "null"],
                "description": "The postal address, as OpenID Connect's `address` claim has it.",
                "additionalProperties": False,
                "properties": {part: {"type": "string"} for part in postal_address.PARTS},
            },
            "mfa_method": {"enum": [*SecondFactorMethod, None], "description": "The second factor, if on."},
        },
    },
    "Session": {
        "type": "object",
        "required": ["id", "device", "ip", "started_at", "last_seen_at", "current"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "device": {"type": "string", "description": "Browser and system, read from the user agent."},
            "ip": {"type": ["string", "null"]},
            "started_at": {"type": "integer", "description": "Seconds since the epoch."},
            "last_seen_at": {"type": "integer", "description": "Seconds since the epoch."},
            "current": {"type": "boolean", "description": "The session the access token was issued in."},
        },
    },
    "Ended": {
        "type": "object",
        "required": ["ended", "phone_removed"],
        "additionalProperties": False,
        "properties": {
            "ended": {"type": "integer", "minimum": 0},
            "phone_removed": {
                "type": ["string", "null"],
                "description": (
                    "The phone number taken off the account because it was added after the person last gave "
                    "their password or reset it; null when none was."
                ),
            },
        },
    },
    "PendingPhone": _sent("phone", "The number the code went to, in E.164.", "code"),
    "PendingEmail": _sent("email", "The new address, as normalized.", "link"),
    "PasswordCode": _sent("email", "The verified address the code went to.", "code"),
}

_BODIES: dict[str, Fields] = {
    "ProfileChange": PROFILE_FIELDS,
    "PasswordChange": PASSWORD_FIELDS,
    "PhoneAdd": PHONE_FIELDS,
    "PhoneCode": CODE_FIELDS,
    "EmailChange": EMAIL_FIELDS,
    "FirstPassword": SET_PASSWORD_FIELDS,
    "AccountDeletion": DELETE_FIELDS,
}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {MEDIA_TYPE: {"schema": PROBLEM}}}
    if headers:
        response["headers"] = headers
    return response


_RESPONSES: dict[str, Any] = {
    "Unauthorized": _problem(
        (
            "`invalid-token`: no access token, or one that is malformed, expired, revoked or not from this "
            "provider, or whose person is disabled."
        ),
        {
            "WWW-Authenticate": {
                "description": 'RFC 6750: `Bearer realm="idp", error="invalid_token" ...`',
                "schema": {"type": "string"},
            }
        },
    ),
    "Forbidden": _problem(
        f"`no-person`: a client credentials token, which acts for no person; `insufficient-scope`: the token lacks "
        f"`{REQUIRED_SCOPE}`; `not-first-party`: the token was issued to a client not registered as first party."
    ),
    "MalformedBody": _problem("`malformed-body`: the body is not well-formed JSON in UTF-8."),
    "BodyTooLarge": _problem("`body-too-large`: the body is over 64 KiB."),
    "UnsupportedMediaType": _problem(f"`unsupported-media-type`: the body is not `{JSON_TYPE}`."),
    "InvalidBody": _problem("`invalid-body`: the body is not an object of the documented members (see `errors`)."),
    "Unavailable": _problem("`temporarily-unavailable`: the database cannot be reached for now.", RETRY_AFTER),
}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON_TYPE: {"schema": schema}}}


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Every operation may answer 401, 403 and 503; one with a body also 400, 413, 415 and 422."""
    common = {
        "401": _ref("responses", "Unauthorized"),
        "403": _ref("responses", "Forbidden"),
        "503": _ref("responses", "Unavailable"),
    }
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    if description:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON_TYPE: {"schema": _ref("schemas", body)}}}
        common |= {
            "400": _ref("responses", "MalformedBody"),
            "413": _ref("responses", "BodyTooLarge"),
            "415": _ref("responses", "UnsupportedMediaType"),
            "422": _ref("responses", "InvalidBody"),
        }
    operation["responses"] = dict(sorted((common | responses).items()))
    return operation


def _problem_types(issuer: str) -> str:
    kinds = "\n".join(f"- `{issuer}/problems/{name}` ({kind.status}): {kind.title}." for name, kind in KINDS.items())
    return f"Problem types (`type`; a 404 or 405 from routing is `about:blank`):\n\n{kinds}"


def document(issuer: str) -> dict[str, Any]:
    profile = _ref("schemas", "Profile")
    not_proven = _problem(
        "`wrong-password`; `account-locked`: wrong passwords locked the account, and no password is checked "
        "until the lock ends; `sign-in-required`: the account has no password and the person signed in more "
        "than five minutes ago; or as for any operation."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "idp account API",
            "version": "1",
            "description": (
                "The signed-in person's own account, as on the `/account` page. Authorize each request with "
                "`Authorization: Bearer <access token>`: an access token this provider issued for the person to "
                f"one of its first-party clients, with the `{REQUIRED_SCOPE}` scope. Every error is "
                f"`{MEDIA_TYPE}` (RFC 9457).\n\n" + _problem_types(issuer)
            ),
        },
        "servers": [{"url": issuer}],
        "security": [{"bearer": [REQUIRED_SCOPE]}],
        "paths": {
            "/api/account": {
                "get": _operation("getAccount", "The person's profile", {"200": _json("The profile.", profile)}),
                "patch": _operation(
                    "updateAccount",
                    "Change the profile",
                    {
                        "200": _json("The profile as changed.", profile),
                        "409": _problem("`username-taken`: another person has the `preferred_username`."),
                        "422": _problem(
                            "`invalid-body`; `invalid-name`: a name is refused; `invalid-username`; "
                            "`invalid-language`: the `locale` is not a BCP 47 language tag; "
                            "`unknown-time-zone`: the `zoneinfo` is not an IANA time zone; `invalid-picture`: the "
                            "`picture` is not an https URL; `invalid-address`: a part of the `address` is too long "
                            "or holds control characters."
                        ),
                        "429": _problem(
                            "`rate-limited`: too many requests naming a `preferred_username` from this address.",
                            RETRY_AFTER,
                        ),
                    },
                    body="ProfileChange",
                    description=(
                        "Only the members sent change, each checked before any is saved. Email and phone change "
                        "only through proof that the person holds them."
                    ),
                ),
                "delete": _operation(
                    "deleteAccount",
                    "Delete the account",
                    {
                        "204": {"description": "Deleted; every session ended, every grant and token revoked."},
                        "403": not_proven,
                        "409": _problem(
                            "`account-changed`: the password changed while the one given was checked; try again."
                        ),
                        "429": _problem("`rate-limited`: too many password tries from this address.", RETRY_AFTER),
                    },
                    body="AccountDeletion",
                    description=(
                        "The person is told at their verified address. Audit events about them stay, without "
                        "address, user agent or details, until the audit retention removes them."
                    ),
                ),
            },
            "/api/account/export": {
                "get": _operation(
                    "exportAccount",
                    "Everything held about the person",
                    {"200": _json("Profile, sessions, applications and audit events.", {"type": "object"})},
                    description="No password hash, authenticator secret, recovery code or token is in it.",
                ),
            },
            "/api/account/sessions": {
                "get": _operation(
                    "listSessions",
                    "The person's live sessions, the current one first",
                    {"200": _json("The sessions.", {"type": "array", "items": _ref("schemas", "Session")})},
                ),
            },
            "/api/account/sessions/{session_id}": {
                "delete": _operation(
                    "endSession",
                    "End one session",
                    {
                        "204": {"description": "Ended; its grants and their tokens are revoked."},
                        "404": _problem("`session-not-found`: not a live session of this person."),
                    },
                    description="Ending the current session revokes the access token used, too.",
                ),
                "parameters": [{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            },
            "/api/account/sessions/end-others": {
                "post": _operation(
                    "endOtherSessions",
                    "End every session but the current one",
                    {"200": _json("How many sessions ended.", _ref("schemas", "Ended"))},
                    description=(
                        "A phone number added after the person last gave their password (or reset it) is taken "
                        "off too, and the owner's email address told: whoever added it could otherwise sign back "
                        "in by SMS code."
                    ),
                ),
            },
            "/api/account/password": {
                "post": _operation(
                    "changePassword",
                    "Change the password",
                    {
                        "204": {"description": "Changed; every other session ended and its grants revoked."},
                        "403": _problem(
                            "`wrong-password`; `account-locked`: wrong passwords locked the account, and no "
                            "password is checked until the lock ends; or as for any operation."
                        ),
                        "409": _problem(
                            "`account-changed`: the password changed while the new one was checked; try again."
                        ),
                        "422": _problem("`invalid-body`, or `password-rejected`: `detail` says which rule."),
                        "429": _problem("`rate-limited`: too many password tries from this address.", RETRY_AFTER),
                    },
                    body="PasswordChange",
                ),
            },
            "/api/account/email": {
                "post": _operation(
                    "changeEmail",
                    "Send a link to confirm a new email address",
                    {
                        "202": _json("The link is on its way.", _ref("schemas", "PendingEmail")),
                        "403": not_proven,
                        "409": _problem(
                            "`account-changed`: the password changed while the one given was checked; try again."
                        ),
                        "422": _problem("`invalid-body`, or `invalid-email` (not an address, or the current one)."),
                        "429": _problem("`too-many-emails`, or `rate-limited`.", RETRY_AFTER),
                    },
                    body="EmailChange",
                    description=(
                        "The current address is told at once; the address changes, verified, only when the "
                        "person opens the link, and the old address is then told again. A password reset before "
                        "then spends the link. An address another account has gets the same answer, and its "
                        "owner a notice instead of the link."
                    ),
                ),
            },
            "/api/account/phone": {
                "post": _operation(
                    "addPhone",
                    "Send a verification code to a phone number",
                    {
                        "202": _json("The code is on its way.", _ref("schemas", "PendingPhone")),
                        "403": not_proven,
                        "409": _problem(
                            "`phone-needed`: SMS is the second factor, so its number cannot be replaced; or "
                            "`account-changed`: the password changed while the one given was checked, try again."
                        ),
                        "422": _problem("`invalid-body`, or `invalid-phone`."),
                        "429": _problem("`too-many-codes`, or `rate-limited`.", RETRY_AFTER),
                    },
                    body="PhoneAdd",
                    description=(
                        "The number becomes the person's only once the code comes back; the owner's email address "
                        "is then told. A password reset or signing out everywhere takes it off again unless the "
                        "person has given their password since."
                    ),
                ),
                "delete": _operation(
                    "removePhone",
                    "Remove the phone number",
                    {
                        "200": _json("The profile, without a number.", profile),
                        "409": _problem(
                            "`no-phone`; `phone-needed`: SMS is the second factor, or the account has no email "
                            "address to sign in with."
                        ),
                    },
                    description="Codes no longer go to the number, and it no longer signs the person in.",
                ),
            },
            "/api/account/password/set/code": {
                "post": _operation(
                    "sendPasswordCode",
                    "Email the code that setting a first password needs",
                    {
                        "202": _json("The code is on its way.", _ref("schemas", "PasswordCode")),
                        "409": _problem("`password-already-set`, or `no-verified-email`."),
                        "429": _problem("`too-many-codes`, or `rate-limited`.", RETRY_AFTER),
                    },
                    description="For an account without a password, which signs in with one-time codes.",
                ),
            },
            "/api/account/password/set": {
                "post": _operation(
                    "setPassword",
                    "Set a first password with the emailed code",
                    {
                        "204": {"description": "Set; every other session ended and its grants revoked."},
                        "409": _problem(
                            "`password-already-set`, `no-verified-email`, or `account-changed`: the account "
                            "changed while the password was checked; try again."
                        ),
                        "422": _problem(
                            "`invalid-body`; `wrong-code` (three wrong tries spend the code); or `password-rejected` "
                            "(the code stays usable)."
                        ),
                        "429": _problem("`rate-limited`.", RETRY_AFTER),
                    },
                    body="FirstPassword",
                ),
            },
            "/api/account/phone/verify": {
                "post": _operation(
                    "verifyPhone",
                    "Verify the number with the code sent to it",
                    {
                        "200": _json("The profile, with the number verified.", profile),
                        "409": _problem(
                            "`no-pending-phone`; `phone-unavailable`; or `phone-needed`: SMS became the second "
                            "factor since the code was sent."
                        ),
                        "422": _problem("`invalid-body`, or `wrong-code` (three wrong tries spend the code)."),
                        "429": _problem("`rate-limited`.", RETRY_AFTER),
                    },
                    body="PhoneCode",
                ),
            },
            "/api" + PATH: {
                "get": {
                    "operationId": "getOpenAPI",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})},
                },
            },
        },
        "components": {
            "schemas": _SCHEMAS | {name: json_schema(fields) for name, fields in _BODIES.items()},
            "responses": _RESPONSES,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        "An RFC 9068 access token from this provider's token endpoint, issued for a person "
                        f"(authorization code or refresh token grant) to a first-party client, with the "
                        f"`{REQUIRED_SCOPE}` scope."
                    ),
                },
            },
        },
    }


async def openapi(request: Request) -> Response:
    """Public, like the provider's discovery document."""
    return JSONResponse(document(context(request).settings.issuer))
