"""Relying parties registered with the provider, and the assertion ids they already used."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, true
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    # Origins of the client's browser app (``scheme://host[:port]``), answered with CORS.
    web_origins: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    scope: Mapped[str] = mapped_column(String(1000))
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    # False when registered without naming a method: the secret may come in the header or the body.
    auth_method_pinned: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    jwks_uri: Mapped[str | None] = mapped_column(String(2000))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    jwks_fetched_at: Mapped[int | None] = mapped_column(BigInteger)
    # When ``jwks_uri`` was last asked, whether or not it answered: at most once an interval.
    jwks_checked_at: Mapped[int | None] = mapped_column(BigInteger)
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    # How its sign-in starts: "password" (the sign-in page) or "code" (the code page, and a
    # ``login_hint`` gets its code at once).
    sign_in: Mapped[str] = mapped_column(String(16), default="password", server_default="password")
    # RFC 7591 §2 metadata the sign-in and consent pages show: the client's logo, privacy policy
    # and terms of service.
    logo_uri: Mapped[str | None] = mapped_column(String(2000))
    policy_uri: Mapped[str | None] = mapped_column(String(2000))
    tos_uri: Mapped[str | None] = mapped_column(String(2000))
    # Lifetimes of the client's own, in seconds; ``None``: the server's. Never longer than the
    # server's at issuance, which bounds how long a key must stay published.
    access_token_ttl: Mapped[int | None] = mapped_column(Integer)
    refresh_token_ttl: Mapped[int | None] = mapped_column(Integer)
    refresh_token_absolute_ttl: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    @property
    def scopes(self) -> set[str]:
        return set(self.scope.split())


class ClientAssertion(Base):
    """A ``jti`` of a ``private_key_jwt`` assertion, kept until the assertion expires (RFC 7523 §3)."""

    __tablename__ = "client_assertions"

    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
