"""Rate limits: requests per time window, per client address, per account and per OAuth client (a
public one, which anyone can name, per OAuth client and client address).

The ``limits`` library counts them in a moving window, so ``Retry-After`` says exactly when the
oldest request leaves the window. With ``IDP_REDIS_URL`` the counts live in Redis (atomic Lua
scripts, shared by every process); without it, in this process's memory. When Redis does not
answer, checks count in memory instead, counted in ``idp_redis_fallbacks_total`` (an error is
logged when the outage begins, not at each fallback), and Redis is asked again only after
``REDIS_RETRY`` seconds: an outage slows no request down, and it ends by itself when Redis is back.

A request served in the event loop does not wait on Redis there: a count it needs raises
:class:`CountInRedis`, and the request pipeline makes the count with an asyncio client of that
loop (:meth:`RateLimiter.check_async`, the same Lua scripts on the same keys) and serves it again.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import limits
import limits.aio.storage
import limits.aio.strategies
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

from .. import metrics
from ..observability.outages import Outage
from ..settings import Settings

if TYPE_CHECKING:
    import redis.asyncio

    from ..redis_clients import RedisClients

log = logging.getLogger("idp.rate_limits")

KEY_PREFIX = "idp:limits"
REDIS_RETRY = 2.0


class Limit(StrEnum):
    """Each limit is the setting ``IDP_RATE_LIMIT_<NAME>``, except the SMS budgets (below). Those
    that end in ``_ADDRESS`` count mail sent to one email address, keyed by its digest."""

    REGISTRATION = "registration"
    SIGN_IN = "sign_in"
    SIGN_IN_ACCOUNT = "sign_in_account"
    RESET = "reset"
    VERIFICATION = "verification"
    TOKEN = "token"
    AUTHORIZE = "authorize"
    SMS = "sms"
    SMS_COUNTRY = "sms_country"
    REGISTRATION_ADDRESS = "registration_address"
    VERIFICATION_ADDRESS = "verification_address"
    EMAIL_CHANGE_ADDRESS = "email_change_address"


# Text messages cost money: their hourly budgets (``IDP_SMS_BUDGET_HOUR``,
# ``IDP_SMS_BUDGET_COUNTRY_HOUR``) hold even with ``IDP_RATE_LIMITING`` off. So do the limits on mail
# to one address, which may belong to someone who never asked for it.
ALWAYS_ON = frozenset(
    {Limit.SMS, Limit.SMS_COUNTRY, Limit.REGISTRATION_ADDRESS, Limit.VERIFICATION_ADDRESS, Limit.EMAIL_CHANGE_ADDRESS}
)


@dataclass(frozen=True)
class Refusal:
    limit: Limit
    retry_after: int


class CountInRedis(Exception):
    """A count that waits on Redis, needed where the request may not block: count it with
    :meth:`RateLimiter.check_async` and hand the result to ``keep``, then serve the request again."""

    def __init__(self, limit: Limit, key: str, keep: Callable[[Refusal | None], None]) -> None:
        super().__init__(limit.value)
        self.limit = limit
        self.key = key
        self.keep = keep


class RateLimiter:
    def __init__(self, settings: Settings, redis_clients: RedisClients | None) -> None:
        self.enabled = settings.rate_limiting
        self._rates = {limit: _rate(settings, limit) for limit in Limit}
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis: MovingWindowRateLimiter | None = None
        self._redis_errors: tuple[type[Exception], ...] = ()
        self._redis_clients = redis_clients
        if redis_clients is not None:
            import redis

            self._redis_errors = (redis.RedisError,)
            storage = RedisStorage(
                redis_clients.url, connection_pool=redis_clients.sync.connection_pool, key_prefix=KEY_PREFIX
            )
            self._redis = MovingWindowRateLimiter(storage)
        self._async: weakref.WeakKeyDictionary[redis.asyncio.Redis, limits.aio.strategies.MovingWindowRateLimiter] = (
            weakref.WeakKeyDictionary()
        )
        self._redis_retry_at = 0.0
        self._outage = Outage(
            log,
            logging.ERROR,
            f"rate limits: Redis is unreachable (%s); counting in this process, asking again every {REDIS_RETRY:g} s",
            "rate limits: Redis answers again; counting there",
        )

    def check(self, limit: Limit, key: str) -> Refusal | None:
        """Count one request against ``limit`` for ``key``; a refusal when the window is full.

        A refused request is not counted, so a client that keeps retrying is let in again as soon
        as its earliest counted request leaves the window.
        """
        if not self.enabled and limit not in ALWAYS_ON:
            return None
        rate = self._rates[limit]
        strategy = self._strategy()
        try:
            retry_after = _hit(strategy, rate, limit.value, key)
        except self._redis_errors as exc:
            self._fall_back(exc)
            retry_after = _hit(self._memory, rate, limit.value, key)
        else:
            if strategy is self._redis:
                self._outage.succeeded()
        if retry_after is None:
            return None
        metrics.RATE_LIMITED.labels(limit.value).inc()
        return Refusal(limit, retry_after)

    async def check_async(self, limit: Limit, key: str) -> Refusal | None:
        """:meth:`check`, counting in Redis without blocking the event loop it runs in."""
        if not self.waits(limit):
            return self.check(limit, key)
        rate = self._rates[limit]
        try:
            retry_after = await _hit_async(self._async_strategy(), rate, limit.value, key)
        except self._redis_errors as exc:
            self._fall_back(exc)
            retry_after = _hit(self._memory, rate, limit.value, key)
        else:
            self._outage.succeeded()
        if retry_after is None:
            return None
        metrics.RATE_LIMITED.labels(limit.value).inc()
        return Refusal(limit, retry_after)

    def _async_strategy(self) -> limits.aio.strategies.MovingWindowRateLimiter:
        """Counts through the running loop's asyncio client, whose connections it shares: one
        strategy per client, made once, as each loop's client is."""
        assert self._redis_clients is not None
        client = self._redis_clients.for_loop()
        strategy = self._async.get(client)
        if strategy is None:
            storage = limits.aio.storage.RedisStorage(
                _async_url(self._redis_clients.url),
                implementation="redispy",
                key_prefix=KEY_PREFIX,
                # Documented by limits (its client is then made on this pool), but typed as
                # taking only the plain options it passes on.
                connection_pool=client.connection_pool,  # type: ignore[arg-type]
            )
            strategy = self._async[client] = limits.aio.strategies.MovingWindowRateLimiter(storage)
        return strategy

    def waits(self, limit: Limit) -> bool:
        """Whether counting against ``limit`` now waits on Redis."""
        return (self.enabled or limit in ALWAYS_ON) and self._strategy() is self._redis

    def _strategy(self) -> MovingWindowRateLimiter:
        if self._redis is None or time.monotonic() < self._redis_retry_at:
            return self._memory
        return self._redis

    def _fall_back(self, exc: Exception) -> None:
        self._redis_retry_at = time.monotonic() + REDIS_RETRY
        metrics.REDIS_FALLBACKS.inc()
        self._outage.failed(exc)


def _rate(settings: Settings, limit: Limit) -> limits.RateLimitItem:
    if limit is Limit.SMS:
        return limits.RateLimitItemPerHour(settings.sms_budget_hour)
    if limit is Limit.SMS_COUNTRY:
        return limits.RateLimitItemPerHour(settings.sms_budget_country_hour)
    return limits.parse(getattr(settings, f"rate_limit_{limit.value}"))


def _async_url(url: str) -> str:
    """The same Redis as ``limits`` names it for redis-py's asyncio client (the scheme picks its
    backend; the connections are the loop client's): ``async+`` before the scheme, and a socket
    (redis-py's ``unix://``) as ``async+redis+unix://``."""
    scheme, _, rest = url.partition("://")
    return f"async+redis+unix://{rest}" if scheme == "unix" else f"async+{url}"


async def _hit_async(
    strategy: limits.aio.strategies.MovingWindowRateLimiter, rate: limits.RateLimitItem, *identifiers: str
) -> int | None:
    """:func:`_hit` through an asyncio strategy."""
    if await strategy.hit(rate, *identifiers):
        return None
    reset_at = (await strategy.get_window_stats(rate, *identifiers)).reset_time
    return max(1, math.ceil(reset_at - time.time()))


def _hit(strategy: MovingWindowRateLimiter, rate: limits.RateLimitItem, *identifiers: str) -> int | None:
    """None when the request fits in the window; else the seconds until a slot frees up."""
    if strategy.hit(rate, *identifiers):
        return None
    reset_at = strategy.get_window_stats(rate, *identifiers).reset_time
    return max(1, math.ceil(reset_at - time.time()))
