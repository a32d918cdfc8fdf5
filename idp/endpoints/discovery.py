"""OpenID Provider metadata (OIDC Discovery 1.0 §3, RFC 8414) and the JWKS (RFC 7517).

Both change rarely (the metadata never while a process runs, the JWKS at a key rotation) and are
asked for often by every relying party and API, so each is serialised once and served as ready
bytes by :class:`~idp.web.documents.PublicDocuments`.
"""

from __future__ import annotations

from ..context import Context
from ..oauth.metadata import PATHS
from ..web.documents import Document

JWKS_MAX_AGE = 300
METADATA_MAX_AGE = 3600


def _metadata(ctx: Context) -> bytes:
    return ctx.metadata_json


def _jwks(ctx: Context) -> bytes:
    """Built once per key rotation."""
    return ctx.keyring.snapshot().jwks_json


_METADATA = Document(_metadata, "application/json", METADATA_MAX_AGE)
DOCUMENTS = {
    "/.well-known/openid-configuration": _METADATA,
    "/.well-known/oauth-authorization-server": _METADATA,
    PATHS["jwks_uri"]: Document(_jwks, "application/jwk-set+json", JWKS_MAX_AGE),
}
