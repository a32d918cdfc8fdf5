"""The account JSON API: what ``/account`` offers a person, for programs that hold their access token.

Each operation reads the bearer token from the header and its JSON body (within limits), then
runs in a worker thread inside one transaction: authenticate, lock the person's row (for any
operation but a read), call the service in :mod:`idp.accounts`, write the audit event, commit.
The services are the same the hosted page calls; only the answers differ (JSON and RFC 9457
problems instead of pages and redirects).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..accounts import email_change, first_password, otp, profile, sms_budget
from ..accounts.codes_vocabulary import Channel
from ..accounts.password_policy import PasswordRejected
from ..accounts.phones import PhoneError
from ..accounts.reauthentication import (
    MAX_PASSWORD_INPUT,
    AccountLocked,
    NotReauthenticated,
    RecentSignIn,
    WrongPassword,
    reauthenticate,
)
from ..accounts.recovery import change_password as change_password_service
from ..accounts.users import MAX_NAME, lock_user
from ..audit import Event, mask
from ..context import Context
from ..security.rate_limits import Limit
from ..storage import BrowserSession, User
from ..web.request import audit, context, rate_limit_address, request_address
from .bearer import Caller, authenticate, bearer_token
from .bodies import Field, Fields, parse_json, read_limited
from .problems import Problem

NAME_FIELDS: Fields = {
    "name": Field(MAX_NAME, "The name to show; an empty string removes it.", required=False),
}
PASSWORD_FIELDS: Fields = {
    "current_password": Field(MAX_PASSWORD_INPUT, "The password the person signs in with now."),
    "password": Field(MAX_PASSWORD_INPUT, "The new password; the password policy applies."),
}
PHONE_FIELDS: Fields = {
    "phone": Field(64, "The number in E.164 (+14155550100), or national in the provider's default region."),
    "current_password": Field(
        MAX_PASSWORD_INPUT,
        "The password the person signs in with now; required when the account has one.",
        required=False,
    ),
}
CODE_FIELDS: Fields = {
    "code": Field(16, "The code sent by SMS to the number waiting for verification."),
}
EMAIL_FIELDS: Fields = {
    "email": Field(320, "The new address; the link that confirms it goes there."),
    "current_password": Field(
        MAX_PASSWORD_INPUT,
        "The password the person signs in with now; required when the account has one.",
        required=False,
    ),
}
SET_PASSWORD_FIELDS: Fields = {
    "code": Field(16, "The code emailed by POST /api/account/password/set/code."),
    "password": Field(MAX_PASSWORD_INPUT, "The first password; the password policy applies."),
}

Handler = Callable[[Request, Session, Caller, dict[str, str]], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def operation(fields: Fields | None = None) -> Callable[[Handler], Endpoint]:
    """Make ``handler`` an endpoint that acts for the token's person on a body with ``fields``.

    The token is checked before the body, so a caller without a good token learns nothing about
    bodies; only a body over the size limit is refused first, while it is being read. A
    :class:`Problem` raised anywhere rolls back the transaction and becomes the answer (see
    :mod:`idp.api.problems`).
    """

    def wrap(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            token = bearer_token(request)
            raw = await read_limited(request) if fields is not None else b""
            return await run_in_threadpool(_run, request, token, raw, fields, handler)

        return endpoint

    return wrap


def _run(request: Request, token: str, raw: bytes, fields: Fields | None, handler: Handler) -> Response:
    ctx = context(request)
    with ctx.db() as db:
        caller = authenticate(ctx, db, token)
        values = parse_json(request, raw, fields) if fields is not None else {}
        if request.method != "GET":
            caller = _locked(ctx, db, caller, token)
        return handler(request, db, caller, values)


def _locked(ctx: Context, db: Session, caller: Caller, token: str) -> Caller:
    """Lock the person's row before the operation writes anything, as the hosted pages do, so that
    two changes of one account run one after the other; then check the token again, afresh: what
    held the lock before us (a password reset) may have revoked it."""
    lock_user(db, caller.user.id)
    db.expire_all()
    return authenticate(ctx, db, token)


def _json(body: Any, status_code: int = 200) -> Response:
    return JSONResponse(body, status_code=status_code, headers={"Cache-Control": "no-store"})


def _profile(user: User) -> dict[str, Any]:
    return {
        "sub": user.id,
        "email": user.email,
        "email_verified": bool(user.email_verified),
        "phone": user.phone,
        "phone_verified": bool(user.phone_verified),
        "name": user.name,
        "mfa_method": user.mfa_method,
    }


def _audit(request: Request, db: Session, caller: Caller, event: Event, outcome: str, **detail: Any) -> None:
    audit(request, db, event, outcome=outcome, user_id=caller.user.id, client_id=caller.client_id, detail=detail)


@operation()
def get_account(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    return _json(_profile(caller.user))


@operation(NAME_FIELDS)
def patch_account(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    """Only ``name`` can change here: email and phone change through proof that the person holds them."""
    if "name" in body:
        try:
            profile.update_name(db, caller.user, body["name"])
        except profile.ProfileError as exc:
            raise Problem("invalid-name", str(exc)) from None
        _audit(request, db, caller, Event.PROFILE_UPDATED, "success", fields=["name"])
        db.commit()
    return _json(_profile(caller.user))


@operation()
def list_sessions(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    sessions = profile.list_sessions(db, caller.user, caller.session_id)
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
def end_session(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    """Ending the token's own session revokes the token with the grant made in it."""
    session_id = request.path_params["session_id"]
    if not profile.end_one(db, caller.user, session_id):
        raise Problem("session-not-found", "None of your live sessions has this id.")
    current = session_id == caller.session_id
    _audit(request, db, caller, Event.SESSION_ENDED, "success", session_id=session_id, current=current)
    db.commit()
    return Response(status_code=204)


@operation()
def end_other_sessions(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    """A phone number nobody vouched for since it was added goes too."""
    ended = profile.end_others(context(request), db, caller.user, caller.session_id or "")
    for session_id in ended.sessions:
        _audit(request, db, caller, Event.SESSION_ENDED, "success", session_id=session_id, current=False)
    if ended.phone_removed is not None:
        phone = mask(ended.phone_removed)
        _audit(request, db, caller, Event.PHONE_REMOVED, "success", phone=phone, reason="added_since_confirmation")
    db.commit()
    return _json({"ended": len(ended.sessions), "phone_removed": ended.phone_removed})


@operation(PASSWORD_FIELDS)
def change_password(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    """Every session but the token's ends, and every grant not made in it is revoked. Each try
    spends the per-address budget for password guesses: the lockout alone would let a stolen
    token hash passwords (and lock the person out) without end."""
    ctx = context(request)
    _throttle(request, db, caller, Limit.SIGN_IN)
    try:
        change_password_service(
            db,
            ctx.settings,
            ctx.secret_key,
            caller.user,
            body["current_password"],
            body["password"],
            caller.session_id,
            ip=request_address(request),
            user_agent=request.headers.get("user-agent"),
        )
    except NotReauthenticated as exc:
        db.commit()
        raise _not_reauthenticated_problem(exc) from None
    except PasswordRejected as exc:
        raise Problem("password-rejected", str(exc)) from None
    db.commit()
    return Response(status_code=204)


def _throttle(request: Request, db: Session, caller: Caller, limit: Limit) -> None:
    """The same per-address budgets as the hosted pages' forms (``limit``)."""
    refusal = context(request).rate_limiter.check(limit, rate_limit_address(request))
    if refusal is None:
        return
    _audit(request, db, caller, Event.RATE_LIMITED, "failure", limit=refusal.limit.value)
    db.commit()
    raise Problem.retry_after(
        "rate-limited",
        f"Too many requests. Try again in {refusal.retry_after} seconds.",
        refusal.retry_after,
    )


@operation(PHONE_FIELDS)
def add_phone(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    """Send a code to the number once the person gave their current password (an account without
    one: signed in a few minutes ago); it becomes the person's once the code comes back."""
    ctx = context(request)
    _throttle(request, db, caller, Limit.VERIFICATION)
    try:
        phone = profile.start_phone_verification(
            ctx, db, caller.user, body["phone"], body.get("current_password", ""), _auth_time(db, caller)
        )
    except NotReauthenticated as exc:
        purpose = profile.VERIFY_PHONE
        _audit(request, db, caller, Event.CODE_SENT, "failure", channel=Channel.SMS, purpose=purpose, reason=exc.reason)
        db.commit()
        raise _not_reauthenticated_problem(exc) from None
    except PhoneError as exc:
        raise Problem("invalid-phone", f"{str(exc)[:1].upper()}{str(exc)[1:]}.") from None
    except profile.PhoneNeeded as exc:
        raise Problem("phone-needed", str(exc)) from None
    except profile.ProfileError as exc:
        raise Problem("invalid-phone", str(exc)) from None
    except otp.ResendTooSoon as exc:
        raise Problem.retry_after(
            "too-many-codes",
            f"Too many codes were sent to this number. Ask again in {exc.wait} seconds.",
            exc.wait,
        ) from None
    except sms_budget.SmsRefused as exc:
        if exc.retry_after is None:
            raise Problem("invalid-phone", str(exc)) from None
        raise Problem.retry_after("too-many-codes", str(exc), exc.retry_after) from None
    _audit(
        request,
        db,
        caller,
        Event.CODE_SENT,
        "success",
        channel=Channel.SMS,
        purpose=profile.VERIFY_PHONE,
        phone=mask(phone),
    )
    db.commit()
    return _json({"phone": phone, "expires_in": ctx.settings.otp_ttl}, status_code=202)


@operation(CODE_FIELDS)
def verify_phone(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    _throttle(request, db, caller, Limit.VERIFICATION)
    phone = profile.pending_phone(db, caller.user)
    if phone is None:
        raise Problem("no-pending-phone", "Add a phone number first: POST /api/account/phone.")
    try:
        profile.confirm_phone(context(request), db, caller.user, phone, body["code"])
    except profile.PhoneNeeded as exc:
        raise Problem("phone-needed", str(exc)) from None
    except (profile.WrongCode, profile.PhoneUnavailable) as exc:
        wrong = isinstance(exc, profile.WrongCode)
        reason = "wrong_code" if wrong else "held_by_another_account"
        _audit(request, db, caller, Event.PHONE_VERIFIED, "failure", phone=mask(phone), reason=reason)
        db.commit()
        if wrong:
            raise Problem("wrong-code", "The code is not right, or it has expired; ask for a new one.") from None
        raise Problem("phone-unavailable", "This phone number cannot be added to your account.") from None
    _audit(request, db, caller, Event.PHONE_VERIFIED, "success", phone=mask(phone))
    db.commit()
    return _json(_profile(caller.user))


@operation()
def remove_phone(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    """Codes no longer go to the number, and it no longer signs the person in."""
    try:
        phone = profile.remove_phone(context(request), db, caller.user)
    except profile.PhoneNeeded as exc:
        raise Problem("phone-needed", str(exc)) from None
    except profile.ProfileError as exc:
        raise Problem("no-phone", str(exc)) from None
    _audit(request, db, caller, Event.PHONE_REMOVED, "success", phone=mask(phone))
    db.commit()
    return _json(_profile(caller.user))


def _auth_time(db: Session, caller: Caller) -> int | None:
    """When the person last signed in, in the session the token was issued in."""
    session = db.get(BrowserSession, caller.session_id) if caller.session_id else None
    return session.auth_time if session is not None else None


def _not_reauthenticated_problem(exc: NotReauthenticated) -> Problem:
    if isinstance(exc, WrongPassword):
        return Problem("wrong-password", "The current password is not right.")
    if isinstance(exc, AccountLocked):
        return Problem("account-locked", str(exc))
    return Problem("sign-in-required", str(exc))


@operation(EMAIL_FIELDS)
def change_email(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    """A link goes to the new address, or its owner is told when another account has it; the same
    answer either way. The address changes only when the link is followed."""
    ctx = context(request)
    _throttle(request, db, caller, Limit.VERIFICATION)
    try:
        email = email_change.parse(caller.user, body["email"])
    except email_change.EmailChangeError as exc:
        raise Problem("invalid-email", str(exc)) from None
    try:
        reauthenticate(
            db,
            ctx.settings,
            ctx.secret_key,
            caller.user,
            body.get("current_password", ""),
            recent_sign_in=RecentSignIn.WITHOUT_PASSWORD,
            auth_time=_auth_time(db, caller),
        )
    except NotReauthenticated as exc:
        _audit(request, db, caller, email_change.REQUEST_EVENT, "failure", reason=exc.reason)
        db.commit()
        raise _not_reauthenticated_problem(exc) from None
    try:
        requested = email_change.request_change(ctx, db, caller.user, email)
    except email_change.TooManyRequests as exc:
        _audit(request, db, caller, email_change.REQUEST_EVENT, "failure", recipient=mask(email), reason="rate_limited")
        db.commit()
        raise Problem.retry_after(
            "too-many-emails",
            f"Several links were asked for this address lately. Ask again in {exc.wait} seconds.",
            exc.wait,
        ) from None
    detail = {"address": requested.address, "recipient": mask(email)}
    if requested.taken:
        _audit(request, db, caller, email_change.REQUEST_EVENT, "failure", reason="address_taken", **detail)
    else:
        _audit(request, db, caller, email_change.REQUEST_EVENT, "success", **detail)
    db.commit()
    return _json({"email": email, "expires_in": email_change.LINK_LIFETIME}, status_code=202)


def _first_password_problem(exc: first_password.FirstPasswordError) -> Problem:
    if isinstance(exc, first_password.AlreadySet):
        return Problem(
            "password-already-set", "The account already has a password: change it with POST /api/account/password."
        )
    return Problem("no-verified-email", str(exc))


@operation()
def send_password_code(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    """The code that setting a first password needs goes to the verified email address."""
    ctx = context(request)
    _throttle(request, db, caller, Limit.VERIFICATION)
    try:
        email = first_password.send_code(ctx, db, caller.user)
    except first_password.FirstPasswordError as exc:
        raise _first_password_problem(exc) from None
    except otp.ResendTooSoon as exc:
        raise Problem.retry_after(
            "too-many-codes",
            f"Too many codes were sent to this address. Ask again in {exc.wait} seconds.",
            exc.wait,
        ) from None
    _audit(request, db, caller, Event.CODE_SENT, "success", channel=Channel.EMAIL, purpose=first_password.PURPOSE)
    db.commit()
    return _json({"email": email, "expires_in": ctx.settings.otp_ttl}, status_code=202)


@operation(SET_PASSWORD_FIELDS)
def set_password(request: Request, db: Session, caller: Caller, body: dict[str, str]) -> Response:
    """A password the policy refuses leaves the code usable for another try."""
    _throttle(request, db, caller, Limit.VERIFICATION)
    try:
        ended = first_password.set_first_password(
            context(request), db, caller.user, body["code"], body["password"], caller.session_id
        )
    except first_password.FirstPasswordError as exc:
        raise _first_password_problem(exc) from None
    except first_password.WrongCode:
        _audit(request, db, caller, Event.PASSWORD_SET, "failure", reason="wrong_code")
        db.commit()
        raise Problem("wrong-code", "The code is not right, or it has expired; ask for a new one.") from None
    except PasswordRejected as exc:
        raise Problem("password-rejected", str(exc)) from None
    _audit(request, db, caller, Event.PASSWORD_SET, "success", sessions_ended=ended)
    db.commit()
    return Response(status_code=204)


async def account(request: Request) -> Response:
    """One route for both methods of ``/api/account``, so that a 405 lists every method it takes."""
    return await (patch_account if request.method == "PATCH" else get_account)(request)


async def phone(request: Request) -> Response:
    """One route for both methods of ``/api/account/phone``, as for ``/api/account``."""
    return await (remove_phone if request.method == "DELETE" else add_phone)(request)


ROUTES = [
    Route("/account", account, methods=["GET", "PATCH"]),
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
