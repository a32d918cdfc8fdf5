"""Persistence: the SQLAlchemy models, one module per concept, and the engine."""

from .audit import AuditEvent
from .base import Base, now
from .clients import Client, ClientAssertion
from .codes import ActionToken, OneTimeCode
from .database import changed_rows, make_engine, make_sessionmaker
from .grant_revocation import revoke_grants
from .grants import AuthorizationCode, AuthorizationRequest, Grant, RefreshToken, RevokedAccessToken
from .outbox import OutboxMessage
from .people import LegacyHashClass, PasswordHistory, RecoveryCode, User, UserGroup
from .sessions import BrowserSession, Consent, PendingSignIn
from .single_use import add_secret, spend_once

__all__ = [
    "add_secret",
    "ActionToken",
    "AuditEvent",
    "AuthorizationCode",
    "AuthorizationRequest",
    "Base",
    "BrowserSession",
    "Client",
    "ClientAssertion",
    "Consent",
    "Grant",
    "LegacyHashClass",
    "OneTimeCode",
    "OutboxMessage",
    "PasswordHistory",
    "PendingSignIn",
    "RecoveryCode",
    "RefreshToken",
    "RevokedAccessToken",
    "User",
    "UserGroup",
    "changed_rows",
    "make_engine",
    "make_sessionmaker",
    "now",
    "revoke_grants",
    "spend_once",
]
