"""The authorization challenge endpoint: OAuth 2.0 for First-Party Applications
(draft-ietf-oauth-first-party-apps-04), a first-party native app signing a person in without a browser.

The app posts an authorization request (§5.1) with PKCE and a ``login_hint`` (an email address or
a phone number); a code goes out as it does from the sign-in pages, and the answer is
``insufficient_authorization`` with an ``auth_session`` (§5.2.2). The app then posts the
``auth_session`` with the ``otp`` it received, or with the person's ``password``; an account with a
second factor is asked for it as one more challenge. The last answer is an ``authorization_code``
(§5.2.1), exchanged at the token endpoint like any other, with its ``code_verifier`` and no
``redirect_uri`` (§6).

Every step is the sign-in pages' own service (:mod:`idp.accounts.challenges`,
:mod:`idp.accounts.authentication`), so the codes' length, lifetime, tries and resend limits, the
lockout, account creation on a first sign-in, the SMS budgets and the audit trail are the same. The
``auth_session`` is a pending sign-in's secret, as the pages' cookie is: 256 random bits, kept only
as a digest, bound to the authorization request it serves and so to its client, dead after
``challenges.LIFETIME`` or the code it yields. Until the code is proven the answer is the same for
an address that has an account and one that has none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy.orm import Session

from .. import audit
from ..accounts import challenges, terms
from ..accounts.authentication import SignInFailed, sign_in_with_password
from ..accounts.errors import WrongCode
from ..context import Context
from ..sso import ActiveSession, start_session
from ..storage import AuthorizationRequest, Client, PendingSignIn, User, now
from . import scopes as scope_rules
from .authorization import AuthorizationParams, checked_claims, new_code, save_pending, unmet
from .errors import (
    InvalidRequest,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    UnsupportedResponseType,
)

MAX_LENGTH = {"login_hint": 320, "nonce": 512, "auth_session": 100, "otp": 64, "password": 1024}
_CODE_CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


class InvalidSession(OAuthError):
    """§5.2.2.1: the ``auth_session`` is unknown, expired, already used, or another client's."""

    error = "invalid_session"


class RedirectToWeb(OAuthError):
    """§5.2.2.1: the person must do what only a browser can show them: accept new terms."""

    error = "redirect_to_web"


class InsufficientAuthorization(OAuthError):
    """§5.2.2.1: the app must send what this challenge asks for, with ``auth_session``; 403.

    Besides the draft's fields the answer says what to collect (the draft leaves these to the
    server, §5.2.2; Appendix B.2 shows ``otp_required``): ``otp_required`` always, as every step
    takes a code; ``channel`` (``email``, ``sms``, or ``totp`` for an authenticator app) where it
    comes from; and ``second_factor`` when the first factor was right and this is the second one,
    which a recovery code answers too. What the step wrote (the pending sign-in, a code sent, a
    wrong try counted) is kept.
    """

    error = "insufficient_authorization"
    status_code = 403
    keeps_changes = True

    def __init__(self, pending: PendingSignIn, auth_session: str, description: str = "") -> None:
        super().__init__(description)
        self.auth_session = auth_session
        self.channel = pending.channel
        self.second_factor = challenges.is_second_factor(pending)

    def answer(self) -> dict[str, object]:
        """The response's JSON object: :meth:`body` and what to collect next."""
        answer: dict[str, object] = {**self.body(), "auth_session": self.auth_session, "otp_required": True}
        answer["channel"] = self.channel
        if self.second_factor:
            answer["second_factor"] = True
        return answer


@dataclass(frozen=True)
class Resumed:
    """The sign-in an ``auth_session`` names, and the authorization request it serves."""

    auth_session: str
    pending: PendingSignIn
    request: AuthorizationRequest
    params: AuthorizationParams

    @property
    def identifier(self) -> str:
        """The address or number the app began with (``login_hint``), normalised."""
        return self.pending.identifier or ""


def check_form(form: Mapping[str, str]) -> None:
    """What a request must carry, checked before its client authenticates: a first request its
    ``login_hint`` and PKCE, a later one its ``auth_session`` and one credential; nothing too long."""
    for name, limit in MAX_LENGTH.items():
        if len(form.get(name, "")) > limit:
            raise InvalidRequest(f"{name} is longer than {limit} characters")
    if "auth_session" in form:
        if ("otp" in form) == ("password" in form):
            raise InvalidRequest("send the auth_session with one of otp or password")
        return
    for name in ("login_hint", "code_challenge"):
        if name not in form:
            raise InvalidRequest(f"{name} is required")
    if form.get("code_challenge_method") != "S256":
        raise InvalidRequest("code_challenge_method must be S256")
    if not _CODE_CHALLENGE.match(form["code_challenge"]):
        raise InvalidRequest("code_challenge is malformed")


def client_of(db: Session, auth_session: str | None) -> str | None:
    """The client whose request ``auth_session`` continues: it identifies a public client that
    sends no ``client_id`` (§5.1)."""
    found = _live(db, auth_session)
    return found[1].client_id if found is not None else None


def start(ctx: Context, db: Session, client: Client, form: Mapping[str, str]) -> NoReturn:
    """The first request: validate it, keep it, send a code to ``login_hint`` and answer the
    challenge. Raises the pages' refusals for a malformed address or number, a code asked for too
    often, and an SMS that may not go; each is the same whether or not an account has the address."""
    _check_client(client)
    params = _parse(client, form)
    identifier = challenges.parse_identifier(form["login_hint"], ctx.settings.phone_default_region)
    request = save_pending(db, params)
    pending, auth_session = challenges.start_passwordless(ctx, db, identifier, request.id)
    raise InsufficientAuthorization(pending, auth_session)


def resume(db: Session, client: Client, auth_session: str) -> Resumed:
    """The live sign-in ``auth_session`` names, if it is ``client``'s; else :class:`InvalidSession`."""
    _check_client(client)
    found = _live(db, auth_session)
    if found is None or found[1].client_id != client.id:
        raise InvalidSession("the auth_session is unknown, expired, used, or not this client's")
    pending, request = found
    return Resumed(auth_session, pending, request, AuthorizationParams.from_dict(request.params))


def _live(db: Session, auth_session: str | None) -> tuple[PendingSignIn, AuthorizationRequest] | None:
    """The pending sign-in ``auth_session`` names and the request it serves, while both live; a
    browser's pending sign-in (its request has a redirect URI, or there is none) is not one."""
    pending = challenges.find(db, auth_session)
    if pending is None or pending.authorization_request_id is None:
        return None
    request = db.get(AuthorizationRequest, pending.authorization_request_id)
    if request is None or request.expires_at <= now() or request.params.get("redirect_uri") is not None:
        return None
    return pending, request


def answer_code(ctx: Context, db: Session, client: Client, resumed: Resumed, code: str) -> str:
    """The authorization code once ``code`` is right and no second factor is due; a wrong code is
    counted and answered with the same challenge, and the third ends the sign-in
    (:class:`~idp.accounts.challenges.TooManyWrongCodes`)."""
    try:
        user, amr = challenges.verify(ctx, db, resumed.pending, code)
    except WrongCode:
        raise InsufficientAuthorization(
            resumed.pending, resumed.auth_session, "the code is wrong or has expired"
        ) from None
    challenges.finish(db, resumed.pending)
    if challenges.second_factor_due(user, resumed.pending):
        _ask_second_factor(ctx, db, user, resumed, amr)
    return _authorize(ctx, db, client, resumed, user, amr)


def answer_password(ctx: Context, db: Session, client: Client, resumed: Resumed, password: str) -> str:
    """The authorization code once the password of the ``login_hint``'s account is right and no
    second factor is due. Only the first factor may be a password: a second-factor challenge is
    answered with a code. A wrong password is counted toward the lockout and answered with the
    same challenge, for the person to try again or enter the code."""
    if challenges.is_second_factor(resumed.pending):
        raise InvalidRequest("this auth_session waits for a second factor: send otp")
    settings = ctx.settings
    try:
        user = sign_in_with_password(db, settings, ctx.secret_key, resumed.identifier, password, client.id)
    except SignInFailed:
        raise InsufficientAuthorization(resumed.pending, resumed.auth_session, "the sign-in failed") from None
    challenges.finish(db, resumed.pending)
    if user.mfa_method:
        _ask_second_factor(ctx, db, user, resumed, ["pwd"])
    return _authorize(ctx, db, client, resumed, user, ["pwd"])


def _check_client(client: Client) -> None:
    """§5: only a client registered as first-party may collect a person's credentials itself."""
    if not client.first_party:
        raise UnauthorizedClient("this client is not first-party: it must use the authorization endpoint")
    if "authorization_code" not in client.grant_types:
        raise UnauthorizedClient("this client may not use the authorization code grant")


def _parse(client: Client, form: Mapping[str, str]) -> AuthorizationParams:
    """§4.1: the authorization request's parameters that mean something without a browser, the
    ``claims`` parameter (OIDC Core §5.5) among them; those that only steer a redirect
    (``redirect_uri``, ``state``, ``response_mode``, ``prompt``) are ignored, as nothing is
    redirected."""
    if form.get("response_type", "code") != "code":
        raise UnsupportedResponseType("only response_type=code is supported")
    scope = scope_rules.parse(form.get("scope"))
    if not scope:
        raise InvalidScope("scope is required")
    scope_rules.check_allowed(scope, client.scopes)
    claims, subject = checked_claims(form.get("claims"), None, client.scopes)
    return AuthorizationParams(
        client_id=client.id,
        redirect_uri=None,
        scope=scope,
        nonce=form.get("nonce"),
        code_challenge=form["code_challenge"],
        hint_subject=subject,
        claims=claims,
    )


def _ask_second_factor(ctx: Context, db: Session, user: User, resumed: Resumed, first_factor: list[str]) -> NoReturn:
    """The next challenge: the person's second factor, under a new ``auth_session`` (§5.3.1 lets
    every answer bring one), as the pages give the browser a new cookie once the first factor is
    right. The earlier ``auth_session`` is spent."""
    pending, auth_session = challenges.start_second_factor(ctx, db, user, resumed.request.id, first_factor)
    raise InsufficientAuthorization(pending, auth_session)


def _authorize(ctx: Context, db: Session, client: Client, resumed: Resumed, user: User, amr: list[str]) -> str:
    """The code, made in a sign-in session of its own as a browser's would be, though no cookie
    names it: the sign-in is recorded there, its ``auth_time``, ``amr`` and ``sid`` reach the ID
    token, it is listed on the person's account page, and ending it there (or signing out
    everywhere, or a password reset) revokes what the app was given. Terms the person has not
    accepted yet send the app to the browser (:class:`RedirectToWeb`), where the terms page asks."""
    if terms.pending(ctx.settings, user):
        raise RedirectToWeb("the person must accept the terms in a browser")
    refused = unmet(resumed.params, user.id, amr)
    if refused is not None:
        raise refused
    origin = audit.origin(db)
    session, _ = start_session(
        db,
        user,
        amr=list(dict.fromkeys(amr)),
        ip=origin.ip,
        user_agent=origin.user_agent,
        lifetime=ctx.settings.session_ttl,
        client_id=client.id,
    )
    return new_code(db, resumed.params, ActiveSession(session, user), resumed.request)
