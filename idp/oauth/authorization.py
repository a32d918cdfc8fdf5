"""The authorization endpoint: validating a request and deciding what the browser sees next.

RFC 6749 §4.1.1-4.1.2, RFC 7636 (PKCE, S256 only), OpenID Connect Core §3.1.2, RFC 9207 (``iss``
in every response) and OAuth 2.0 Form Post Response Mode. A request waiting for sign-in or consent
is kept in the database, so any process can continue it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event
from ..catalogs import N_
from ..errors import Refused
from ..keys import KeyRing
from ..security.digests import new_token, token_digest
from ..security.forms import given, single_values
from ..sso import ActiveSession
from ..storage import AuthorizationCode, AuthorizationRequest, Client, Consent, changed_rows, now, spend_once
from . import claims_request
from . import scopes as scope_rules
from .assurance import meets, step_up_reaches
from .claims_request import ClaimsRequest
from .clients import redirect_uri_registered
from .errors import (
    AccessDenied,
    BadAuthorizationTarget,
    ConsentRequired,
    InteractionRequired,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    LoginRequired,
    OAuthError,
    RequestNotSupported,
    RequestUriNotSupported,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from .tokens import decode_signed

RESPONSE_MODES = ("query", "form_post")
PROMPTS = ("none", "login", "consent", "select_account")
PENDING_LIFETIME = 30 * 60
CODE_LIFETIME = 60
ANSWERED = N_("This sign-in request has already been answered. Go back to the application and start again.")
MAX_VALUE_LENGTH = {"state": 2048, "nonce": 512, "login_hint": 320, "id_token_hint": 8192, "ui_locales": 256}
_CODE_CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_MAX_AGE = re.compile(r"[0-9]{1,10}")


@dataclass
class AuthorizationParams:
    """A validated request, as kept while the person signs in and consents. ``redirect_uri`` is
    ``None`` for a request made at the authorization challenge endpoint (:mod:`.first_party`),
    whose code is answered in the response body and never by redirect."""

    client_id: str
    redirect_uri: str | None
    scope: list[str]
    state: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    response_mode: str = "query"
    prompt: list[str] = field(default_factory=list)
    max_age: int | None = None
    login_hint: str | None = None
    hint_subject: str | None = None
    ui_locales: str | None = None
    """The languages the person prefers, for the pages of the sign-in (OpenID Connect Core §3.1.2.1)."""
    claims: ClaimsRequest | None = None
    """The ``claims`` parameter, checked (:mod:`.claims_request`); its ``sub`` value is ``hint_subject``."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuthorizationParams:
        return cls(**data)

    def agreed_scope(self) -> list[str]:
        """What the person agrees to: the scopes asked for, and those of the claims the app asked
        for by name (OIDC Core §3.1.2.4: nothing about them is released without their decision)."""
        return list(dict.fromkeys(self.scope + claims_request.scopes_asked(self.claims)))


class AuthorizationError(Refused):
    """An error the client learns of by redirect: RFC 6749 §4.1.2.1, with ``state`` and ``iss``."""

    def __init__(self, error: OAuthError, redirect_uri: str, state: str | None, response_mode: str) -> None:
        super().__init__(error.description)
        self.error = error
        self.response = AuthorizationResponse(
            redirect_uri=redirect_uri,
            params={**error.body(), **({"state": state} if state is not None else {})},
            response_mode=response_mode,
        )


@dataclass(frozen=True)
class AuthorizationResponse:
    """What goes back to the client; ``iss`` is added where it is rendered."""

    redirect_uri: str
    params: dict[str, str]
    response_mode: str


@dataclass(frozen=True)
class ShowLogin:
    """The person must sign in; ``sign_in`` is the client's preference of what the sign-in leads with."""

    request_id: str
    login_hint: str | None
    sign_in: str = "password"


@dataclass(frozen=True)
class ShowSecondFactor:
    """The person is signed in, with a password, and the request insists on an ``acr`` their
    second factor would reach: that factor is all they are asked for (:func:`second_factor_suffices`)."""

    request_id: str


@dataclass(frozen=True)
class ShowConsent:
    request_id: str


@dataclass(frozen=True)
class ShowTerms:
    request_id: str


Next = AuthorizationResponse | ShowLogin | ShowSecondFactor | ShowConsent | ShowTerms


def parse_request(
    db: Session, keyring: KeyRing, issuer: str, items: list[tuple[str, str]]
) -> tuple[Client, AuthorizationParams]:
    """Validate in the order RFC 6749 §4.1.2.1 needs: the redirect target first, then the rest.

    A parameter sent without a value is treated as if it were omitted (RFC 6749 §3.1).
    """
    values, repeated = single_values(given(items))
    client_id = values.get("client_id")
    if not client_id or "client_id" in repeated:
        raise BadAuthorizationTarget(N_("The request names no client, or names it more than once."))
    client = db.get(Client, client_id) if len(client_id) <= 64 else None
    if client is None:
        raise BadAuthorizationTarget(N_("The request names a client this provider does not know."))
    redirect_uri = values.get("redirect_uri")
    if not redirect_uri or "redirect_uri" in repeated:
        raise BadAuthorizationTarget(N_("The request must carry exactly one redirect_uri."))
    if not redirect_uri_registered(redirect_uri, client):
        raise BadAuthorizationTarget(N_("The redirect_uri is not one the client registered."))

    response_mode = values.get("response_mode", "query")
    state = values.get("state")

    def fail(error: OAuthError) -> AuthorizationError:
        mode = response_mode if response_mode in RESPONSE_MODES else "query"
        safe_state = state if state is not None and len(state) <= MAX_VALUE_LENGTH["state"] else None
        return AuthorizationError(error, redirect_uri, safe_state, mode)

    if repeated:
        raise fail(InvalidRequest(f"parameters sent more than once: {', '.join(sorted(repeated))}"))
    for name, limit in MAX_VALUE_LENGTH.items():
        if len(values.get(name, "")) > limit:
            raise fail(InvalidRequest(f"{name} is longer than {limit} characters"))
    if response_mode not in RESPONSE_MODES:
        raise fail(InvalidRequest("response_mode must be query or form_post"))
    if "request" in values:
        raise fail(RequestNotSupported("request objects are not supported"))
    if "request_uri" in values:
        raise fail(RequestUriNotSupported("request_uri is not supported"))
    response_type = values.get("response_type")
    if not response_type:
        raise fail(InvalidRequest("response_type is required"))
    if response_type != "code":
        raise fail(UnsupportedResponseType("only response_type=code is supported"))
    if "authorization_code" not in client.grant_types:
        raise fail(UnauthorizedClient("this client may not use the authorization code grant"))

    try:
        scope = scope_rules.parse(values.get("scope"))
        if not scope:
            raise InvalidScope("scope is required")
        scope_rules.check_allowed(scope, client.scopes)
    except OAuthError as exc:
        raise fail(exc) from None

    code_challenge = values.get("code_challenge")
    method = values.get("code_challenge_method")
    if method is not None and method != "S256":
        raise fail(InvalidRequest("code_challenge_method must be S256; plain is not allowed"))
    if code_challenge is not None:
        if method is None:
            raise fail(InvalidRequest("code_challenge_method=S256 is required with code_challenge"))
        if not _CODE_CHALLENGE.match(code_challenge):
            raise fail(InvalidRequest("code_challenge is malformed"))
    elif method is not None:
        raise fail(InvalidRequest("code_challenge_method without code_challenge"))
    elif client.is_public:
        raise fail(InvalidRequest("public clients must use PKCE (code_challenge with S256)"))

    prompt = [p for p in values.get("prompt", "").split(" ") if p]
    if any(p not in PROMPTS for p in prompt):
        raise fail(InvalidRequest(f"prompt must be among {', '.join(PROMPTS)}"))
    if "none" in prompt and len(prompt) > 1:
        raise fail(InvalidRequest("prompt=none cannot be combined with other values"))

    max_age = None
    if "max_age" in values:
        # ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
        raw = values["max_age"]
        if not _MAX_AGE.fullmatch(raw):
            raise fail(InvalidRequest("max_age must be a whole number of seconds"))
        max_age = int(raw)

    hint_subject = None
    if values.get("id_token_hint"):
        hint_subject = _hint_subject(keyring, issuer, client.id, values["id_token_hint"])
        if hint_subject is None:
            raise fail(InvalidRequest("id_token_hint is not an ID token this provider issued to this client"))
    try:
        claims, hint_subject = checked_claims(values.get("claims"), hint_subject, client.scopes)
    except OAuthError as exc:
        raise fail(exc) from None

    return client, AuthorizationParams(
        client_id=client.id,
        redirect_uri=redirect_uri,
        scope=scope,
        state=state,
        nonce=values.get("nonce"),
        code_challenge=code_challenge,
        response_mode=response_mode,
        prompt=prompt,
        max_age=max_age,
        login_hint=values.get("login_hint"),
        hint_subject=hint_subject,
        ui_locales=values.get("ui_locales"),
        claims=claims,
    )


def checked_claims(
    raw: str | None, hint_subject: str | None, allowed_scopes: set[str]
) -> tuple[ClaimsRequest | None, str | None]:
    """The ``claims`` parameter checked, kept to the claims the client's ``allowed_scopes``
    release, and the person the request is about: the ``sub`` it asks for by value is one more
    hint that must be that person (OIDC Core §5.5.1), as ``id_token_hint`` is. Raises
    :class:`~.errors.InvalidRequest`, also when the two name different people."""
    claims = claims_request.within(claims_request.parse(raw), allowed_scopes)
    wanted = claims_request.subject(claims)
    if wanted is None:
        return claims, hint_subject
    if hint_subject is not None and hint_subject != wanted:
        raise InvalidRequest("id_token_hint and the sub the claims parameter asks for are different people")
    return claims, wanted


def _hint_subject(keyring: KeyRing, issuer: str, client_id: str | None, hint: str) -> str | None:
    """An ID token we signed (expired is fine, OIDC Core §3.1.2.1) for this client: its ``sub``."""
    try:
        decoded = decode_signed(keyring, hint)
    except InvalidToken:
        return None
    claims = decoded.claims
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if decoded.header.get("typ", "JWT").lower() in ("at+jwt", "application/at+jwt"):
        return None
    if claims.get("iss") != issuer or (client_id is not None and client_id not in audiences):
        return None
    subject = claims.get("sub")
    return subject if isinstance(subject, str) else None


def verified_id_token_hint(keyring: KeyRing, issuer: str, hint: str) -> dict[str, Any] | None:
    """For logout: the claims of an ID token we signed, for whichever client it was issued."""
    try:
        decoded = decode_signed(keyring, hint)
    except InvalidToken:
        return None
    if decoded.header.get("typ", "JWT").lower() in ("at+jwt", "application/at+jwt"):
        return None
    if decoded.claims.get("iss") != issuer or not isinstance(decoded.claims.get("sub"), str):
        return None
    return dict(decoded.claims)


def save_pending(db: Session, params: AuthorizationParams) -> AuthorizationRequest:
    stamp = now()
    pending = AuthorizationRequest(
        id=new_token(),
        client_id=params.client_id,
        params=asdict(params),
        created_at=stamp,
        expires_at=stamp + PENDING_LIFETIME,
    )
    db.add(pending)
    db.flush()
    return pending


def load_pending(db: Session, request_id: str | None) -> tuple[AuthorizationRequest, Client, AuthorizationParams]:
    """A pending request of the browser flow that exists and has not expired, or
    ``BadAuthorizationTarget``: a request of the authorization challenge endpoint, which has no
    redirect URI, is never continued in a browser."""
    pending = db.get(AuthorizationRequest, request_id) if request_id and len(request_id) <= 64 else None
    if pending is None or pending.expires_at <= now() or pending.params.get("redirect_uri") is None:
        raise BadAuthorizationTarget(
            N_("This sign-in request has expired. Go back to the application and start again.")
        )
    client = db.get(Client, pending.client_id)
    if client is None:
        raise BadAuthorizationTarget(N_("The application of this sign-in request no longer exists."))
    return pending, client, AuthorizationParams.from_dict(pending.params)


def try_hint_code_once(db: Session, request_id: str) -> bool:
    """Whether this call is the one that may send a code to the request's ``login_hint``: true once
    per request, whoever races for it, so that a reload or the back button sends nothing more."""
    return spend_once(
        db,
        AuthorizationRequest,
        AuthorizationRequest.id == request_id,
        AuthorizationRequest.hint_code_tried.is_(False),
        hint_code_tried=True,
    )


def needs_consent(db: Session, client: Client, params: AuthorizationParams, user_id: str) -> bool:
    if client.first_party:
        return False
    if "consent" in params.prompt:
        return True
    granted = db.scalar(select(Consent.scope).where(Consent.user_id == user_id, Consent.client_id == client.id))
    return granted is None or not set(params.agreed_scope()) <= set(granted.split())


def needs_sign_in(
    params: AuthorizationParams, active: ActiveSession | None, pending: AuthorizationRequest | None
) -> bool:
    """Whether the browser must sign in (again) before this request may go on.

    A sign-in made for this very request (``pending.session_id``) satisfies ``prompt=login`` and
    ``max_age``; an older single sign-on session satisfies them only if it is recent enough. One
    that did not reach the ``acr`` the request insists on (OIDC Core §5.5.1.1) signs in again when
    the person has a second factor and a second factor is what it lacks; otherwise the request
    fails without a sign-in that could not help. The consent page asks this
    too, so that going straight to it cannot skip a forced sign-in.
    """
    if active is None:
        return True
    if pending is not None and pending.session_id == active.session.id:
        return False
    return _must_sign_in_again(params, active) or _lacks_second_factor(params, active)


def second_factor_suffices(params: AuthorizationParams, active: ActiveSession | None) -> bool:
    """Whether the person signed in lacks only their second factor: the session was made with
    their password (before two-step sign-in was turned on, say), is recent enough, is theirs, and
    the request insists on an ``acr`` the second factor reaches. A session of a one-time code
    alone signs in again instead: which channel proved it is not kept, and a second code to the
    same channel would prove nothing more."""
    return (
        active is not None
        and "pwd" in active.session.amr
        and not _must_sign_in_again(params, active)
        and _lacks_second_factor(params, active)
    )


def _must_sign_in_again(params: AuthorizationParams, active: ActiveSession) -> bool:
    # Whole seconds truncate the elapsed time, so ">=": max_age=0 always asks (OIDC Core §3.1.2.1).
    too_old = params.max_age is not None and now() - active.session.auth_time >= params.max_age
    other_person = params.hint_subject is not None and params.hint_subject != active.user.id
    return too_old or other_person or bool({"login", "select_account"} & set(params.prompt))


def _lacks_second_factor(params: AuthorizationParams, active: ActiveSession) -> bool:
    required = claims_request.required_acr(params.claims)
    return active.user.mfa_method is not None and step_up_reaches(required, active.session.amr)


def decide(
    db: Session,
    client: Client,
    params: AuthorizationParams,
    active: ActiveSession | None,
    pending: AuthorizationRequest | None = None,
    *,
    terms_version: str | None,
) -> Next:
    """What comes next for this request: sign-in, the terms in force (``terms_version``) when the
    person has not accepted them yet, consent, or the response to the client."""
    if needs_sign_in(params, active, pending):
        if "none" in params.prompt:
            raise _redirect_error(params, LoginRequired("the person must sign in"))
        pending = pending or save_pending(db, params)
        if second_factor_suffices(params, active):
            return ShowSecondFactor(request_id=pending.id)
        return ShowLogin(request_id=pending.id, login_hint=params.login_hint, sign_in=client.sign_in)
    assert active is not None
    refused = unmet(params, active.user.id, active.session.amr)
    if refused is not None:
        raise _redirect_error(params, refused) if pending is None else end(db, params, pending, refused)
    if terms_version is not None and active.user.terms_version != terms_version:
        if "none" in params.prompt:
            raise _redirect_error(params, InteractionRequired("the person must accept the terms"))
        pending = pending or save_pending(db, params)
        return ShowTerms(request_id=pending.id)
    if needs_consent(db, client, params, active.user.id):
        if "none" in params.prompt:
            raise _redirect_error(params, ConsentRequired("the person must consent"))
        pending = pending or save_pending(db, params)
        return ShowConsent(request_id=pending.id)
    return issue_code(db, params, active, pending)


def unmet(params: AuthorizationParams, user_id: str, amr: Iterable[str]) -> OAuthError | None:
    """Why a sign-in, the person ``user_id`` with ``amr``, cannot answer this request, ``None``
    when it can: it is another person than the request names (``id_token_hint``, or the ``sub``
    the claims parameter asks for: OIDC Core §3.1.2.1, §5.5.1), or it did not reach the essential
    ``acr`` asked for (§5.5.1.1: a failed authentication). Where a new sign-in could still help,
    :func:`needs_sign_in` asks for one first."""
    if params.hint_subject is not None and params.hint_subject != user_id:
        return LoginRequired("the person who signed in is not the one the request names")
    if not meets(claims_request.required_acr(params.claims), amr):
        return AccessDenied("the sign-in did not reach the acr the claims parameter requires")
    return None


def _redirect_error(params: AuthorizationParams, error: OAuthError) -> AuthorizationError:
    assert params.redirect_uri is not None, "a request of the browser flow"
    return AuthorizationError(error, params.redirect_uri, params.state, params.response_mode)


def record_consent(db: Session, client: Client, params: AuthorizationParams, user_id: str) -> None:
    """Remember the scopes granted, adding to what this person granted this client before."""
    _consent_event(db, Event.CONSENT_GIVEN, params, user_id)
    consent = db.get(Consent, (user_id, client.id))
    agreed = params.agreed_scope()
    if consent is None:
        db.add(Consent(user_id=user_id, client_id=client.id, scope=" ".join(agreed), granted_at=now()))
    else:
        merged = list(dict.fromkeys(consent.scope.split() + agreed))
        consent.scope = " ".join(merged)
        consent.granted_at = now()


def _consent_event(db: Session, event: Event, params: AuthorizationParams, user_id: str) -> None:
    scope = {"scope": " ".join(params.agreed_scope())}
    audit.record(db, event, outcome="success", user_id=user_id, client_id=params.client_id, detail=scope)


def _answer(db: Session, pending: AuthorizationRequest) -> None:
    """A pending request is answered once: of two answers at once (a double click on "allow",
    "allow" in one tab and "deny" in another), the one that comes second finds it gone."""
    if changed_rows(db.execute(delete(AuthorizationRequest).where(AuthorizationRequest.id == pending.id))) != 1:
        raise BadAuthorizationTarget(ANSWERED)


def end(
    db: Session, params: AuthorizationParams, pending: AuthorizationRequest, error: OAuthError
) -> AuthorizationError:
    """The waiting request ends with ``error``: answered, so that its consent page cannot give a
    code afterwards."""
    _answer(db, pending)
    return _redirect_error(params, error)


def deny(db: Session, params: AuthorizationParams, pending: AuthorizationRequest, user_id: str) -> AuthorizationError:
    """The person declined the client's request on the consent page, or the terms."""
    refusal = end(db, params, pending, AccessDenied("the person declined"))
    _consent_event(db, Event.CONSENT_REFUSED, params, user_id)
    return refusal


def issue_code(
    db: Session, params: AuthorizationParams, active: ActiveSession, pending: AuthorizationRequest | None
) -> AuthorizationResponse:
    """The redirect that carries a new code back to the client."""
    assert params.redirect_uri is not None, "a request of the browser flow"
    response = {"code": new_code(db, params, active, pending)}
    if params.state is not None:
        response["state"] = params.state
    return AuthorizationResponse(params.redirect_uri, response, params.response_mode)


def new_code(
    db: Session, params: AuthorizationParams, active: ActiveSession, pending: AuthorizationRequest | None
) -> str:
    """A code for ``params``, made in ``active``'s sign-in; the pending request is answered by it."""
    code = new_token()
    stamp = now()
    db.add(
        AuthorizationCode(
            code_hash=token_digest(code),
            client_id=params.client_id,
            user_id=active.user.id,
            session_id=active.session.id,
            redirect_uri=params.redirect_uri,
            scope=" ".join(params.scope),
            nonce=params.nonce,
            code_challenge=params.code_challenge,
            auth_time=active.session.auth_time,
            amr=list(active.session.amr),
            requested_claims=params.claims,
            created_at=stamp,
            expires_at=stamp + CODE_LIFETIME,
        )
    )
    if pending is not None:
        _answer(db, pending)
    return code
