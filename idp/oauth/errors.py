"""OAuth 2.0 and OpenID Connect errors, each carrying what its response needs.

RFC 6749 §4.1.2.1 (authorization errors), §5.2 (token endpoint errors), RFC 6750 §3.1 (bearer
token errors) and OpenID Connect Core §3.1.2.6 (``login_required``, ``consent_required`` ...).
"""

from __future__ import annotations

from enum import StrEnum

from ..errors import Refused


class OAuthError(Refused):
    error = "invalid_request"
    status_code = 400

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.description = description

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body


class InvalidRequest(OAuthError):
    error = "invalid_request"


class ClientAuthFailure(StrEnum):
    """Why a client did not authenticate, for the log and the audit trail only: the answer says
    no more than ``client authentication failed`` where more would tell which clients exist."""

    MALFORMED = "malformed"
    UNKNOWN_CLIENT = "unknown_client"
    WRONG_METHOD = "wrong_method"
    WRONG_SECRET = "wrong_secret"
    BAD_ASSERTION = "bad_assertion"
    JWKS_UNAVAILABLE = "jwks_unavailable"
    PUBLIC_CLIENT = "public_client"


class InvalidClient(OAuthError):
    """RFC 6749 §5.2: 401, with ``WWW-Authenticate`` when the client used the Authorization header."""

    error = "invalid_client"
    status_code = 401

    def __init__(
        self,
        description: str = "client authentication failed",
        *,
        reason: ClientAuthFailure,
        used_basic: bool = False,
    ) -> None:
        super().__init__(description)
        self.reason = reason
        self.used_basic = used_basic


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class ReusedGrant(InvalidGrant):
    """A code or refresh token presented again: the grant it came from was revoked when this was
    found out (RFC 6749 §4.1.2, RFC 9700 §4.14.2), and that revocation stays although the
    request is refused."""

    keeps_changes = True


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class AccessDenied(OAuthError):
    error = "access_denied"


class LoginRequired(OAuthError):
    error = "login_required"


class ConsentRequired(OAuthError):
    error = "consent_required"


class InteractionRequired(OAuthError):
    """OIDC Core §3.1.2.6: ``prompt=none``, but the person must do something first (accept terms)."""

    error = "interaction_required"


class RequestNotSupported(OAuthError):
    error = "request_not_supported"


class RequestUriNotSupported(OAuthError):
    error = "request_uri_not_supported"


class InvalidToken(OAuthError):
    """RFC 6750 §3.1: the access token is expired, revoked, malformed or invalid."""

    error = "invalid_token"
    status_code = 401


class InsufficientScope(OAuthError):
    error = "insufficient_scope"
    status_code = 403


class TemporarilyUnavailable(OAuthError):
    """RFC 6749 §4.1.2.1's ``temporarily_unavailable``, answered with 429 and ``Retry-After``
    (RFC 6585 §4) when a client has spent its rate limit."""

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(self, description: str, *, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class BadAuthorizationTarget(Refused):
    """The ``client_id`` or ``redirect_uri`` cannot be trusted: show a page, never redirect."""
