"""What the provider publishes about itself (OIDC Discovery 1.0 §3, RFC 8414), built once per process."""

from __future__ import annotations

from typing import Any

from . import scopes
from .assurance import ACR_VALUES
from .client_jwks import ASSERTION_ALGORITHMS
from .clients import AUTH_METHODS
from .grants.registry import GRANTS

PATHS = {
    "authorization_endpoint": "/authorize",
    "token_endpoint": "/token",
    "userinfo_endpoint": "/userinfo",
    "jwks_uri": "/jwks.json",
    "end_session_endpoint": "/logout",
    "revocation_endpoint": "/revoke",
    "introspection_endpoint": "/introspect",
    "authorization_challenge_endpoint": "/authorize-challenge",
}


def metadata(issuer: str, ui_locales: tuple[str, ...]) -> dict[str, Any]:
    """``ui_locales``: the languages of the hosted pages, as ``ui_locales_supported`` lists them."""
    client_auth = list(AUTH_METHODS)
    confidential_auth = [m for m in AUTH_METHODS if m != "none"]
    return {
        "issuer": issuer,
        **{name: issuer + path for name, path in PATHS.items()},
        "scopes_supported": list(scopes.SUPPORTED),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": list(GRANTS),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": client_auth,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "revocation_endpoint_auth_methods_supported": client_auth,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "introspection_endpoint_auth_methods_supported": confidential_auth,
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "azp",
            "sid",
            "amr",
            "acr",
            "at_hash",
            *scopes.CLAIMS,
        ],
        "acr_values_supported": list(ACR_VALUES),
        "ui_locales_supported": list(ui_locales),
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "require_request_uri_registration": False,
        "authorization_response_iss_parameter_supported": True,
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": False,
    }
