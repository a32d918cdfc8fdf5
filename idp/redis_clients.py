"""The process's Redis clients: one synchronous client, and one asyncio client per event loop.

The change counters and the rate limits both read Redis from the event loop; they share one
asyncio client of each loop, so a loop holds one pool of connections to Redis, not one per use.
Every client gives up on Redis after :data:`TIMEOUT_SECONDS`: a Redis that does not answer must
not hold a request for long, since everything that reads it has something to fall back to.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis
    import redis.asyncio

TIMEOUT_SECONDS = 2


class RedisClients:
    """The clients of the Redis at ``url``. The synchronous one is made at once (before ``idp
    serve`` forks, see :mod:`idp.context`) and connects on first use; an asyncio client's
    connections belong to the loop that opened them, so each loop gets its own, made on its first
    use there and forgotten with the loop."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.sync = redis.Redis.from_url(url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )

    def for_loop(self) -> redis.asyncio.Redis:
        """The running loop's asyncio client."""
        loop = asyncio.get_running_loop()
        client = self._loops.get(loop)
        if client is None:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
            )
            self._loops[loop] = client
        return client

    def close(self) -> None:
        self.sync.close()
