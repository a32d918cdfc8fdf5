"""Persistence: the SQLAlchemy models, one module per concept, and the engine."""

from .audit import AuditEvent
from .base import Base, now
from .clients import Client, ClientAssertion
from .database import make_engine, make_sessionmaker
from .grants import AuthorizationCode, AuthorizationRequest, Grant, RefreshToken, RevokedAccessToken
from .outbox import OutboxMessage
from .people import User
from .sessions import BrowserSession, Consent

__all__ = [
    "AuditEvent",
    "AuthorizationCode",
    "AuthorizationRequest",
    "Base",
    "BrowserSession",
    "Client",
    "ClientAssertion",
    "Consent",
    "Grant",
    "OutboxMessage",
    "RefreshToken",
    "RevokedAccessToken",
    "User",
    "make_engine",
    "make_sessionmaker",
    "now",
]
