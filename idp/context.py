"""What every service needs, built once per process from the settings.

The Redis client library is imported only when ``IDP_REDIS_URL`` names a Redis: a laptop's
single process on SQLite never loads it (a few MB per worker, and start-up time). When it does, the
client is made with the context, before ``idp serve`` forks its workers, so that they share the
library's pages instead of each importing it on its first request; it connects on first use, in
each worker (redis-py opens new connections in a process that is not the one that made them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .audit import AuditQueue
from .caching.asked_claims import AskedClaims
from .caching.clients import ClientCache
from .caching.generations import Generations
from .caching.live_tokens import LiveTokens
from .caching.people import PeopleCache
from .keys import KeyRing, KeyStore
from .languages import Languages, speak
from .messaging.email import EmailBackend, email_backend
from .messaging.sms import SmsBackend, sms_backend
from .oauth.client_auth import ClientAuthenticator
from .oauth.grants.issuance import TokenIssuer
from .oauth.metadata import metadata
from .redis_clients import RedisClients
from .security.csrf import Csrf
from .security.rate_limits import RateLimiter
from .settings import Settings
from .storage import make_engine, make_sessionmaker
from .storage.database import MemorySessions
from .theme import Theme, dress


@dataclass
class Context:
    """Every per-process service, one home for each: surfaces reach them through
    :func:`idp.web.request.context`, the CLI through :func:`idp.cli.context.open_context`."""

    settings: Settings
    engine: Engine
    db: sessionmaker[Session]
    keystore: KeyStore
    keyring: KeyRing
    secret_key: str
    redis: RedisClients | None
    languages: Languages
    theme: Theme
    generations: Generations

    @classmethod
    def build(cls, settings: Settings) -> Context:
        engine = make_engine(settings.database_url)
        keystore = KeyStore(settings.keys_dir)
        languages = Languages.load(settings.default_locale)
        db = make_sessionmaker(engine)
        theme = Theme(settings.site_name, settings.theme_dir)
        speak(db, languages)
        dress(db, theme)
        redis_clients = RedisClients(settings.redis_url) if settings.redis_url is not None else None
        generations = Generations.for_store(settings.database_url, redis_clients)
        generations.attach(db)
        return cls(
            settings=settings,
            engine=engine,
            db=db,
            keystore=keystore,
            keyring=KeyRing(keystore),
            secret_key=settings.secret_key or keystore.secret_key(),
            redis=redis_clients,
            languages=languages,
            theme=theme,
            generations=generations,
        )

    @property
    def serves_from_memory(self) -> bool:
        """Whether a request may be served in the event loop when all it needs is in memory: only
        where the change counters can be read without blocking it, from Redis or from a file
        beside a SQLite database. (A count in Redis against a rate limit is made without
        blocking too, and the request served again: :class:`~idp.security.rate_limits.CountInRedis`.)"""
        return self.generations.mirror is not None

    @cached_property
    def memory_sessions(self) -> MemorySessions:
        return MemorySessions(self.db)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.settings, self.redis)

    @cached_property
    def csrf(self) -> Csrf:
        return Csrf(self.secret_key, self.settings.secure_cookies)

    @cached_property
    def audit_queue(self) -> AuditQueue:
        return AuditQueue(self.db)

    @cached_property
    def token_issuer(self) -> TokenIssuer:
        return TokenIssuer(self.keyring, self.settings, self.audit_queue)

    @cached_property
    def client_authenticator(self) -> ClientAuthenticator:
        return ClientAuthenticator(self.secret_key, self.settings.issuer, self.db, ClientCache(self.generations))

    @cached_property
    def live_tokens(self) -> LiveTokens:
        return LiveTokens(self.generations)

    @cached_property
    def people(self) -> PeopleCache:
        return PeopleCache(self.generations)

    @cached_property
    def asked_claims(self) -> AskedClaims:
        return AskedClaims()

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """The discovery document's members."""
        return metadata(self.settings.issuer, self.languages.tags)

    @cached_property
    def metadata_json(self) -> bytes:
        """The discovery document, serialised once."""
        return json.dumps(self.metadata, separators=(",", ":")).encode()

    @cached_property
    def email_backend(self) -> EmailBackend:
        return email_backend(self.settings)

    @cached_property
    def sms_backend(self) -> SmsBackend:
        return sms_backend(self.settings)

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
        self.engine.dispose()
