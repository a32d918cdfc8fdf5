"""One read shared by every request of an event loop that waits for it, begun after each arrived.

Every request served from memory reads the change counters first, from Redis: a round trip, and
more CPU in the client than the rest of many such requests. Requests that arrive together can
share one read, but not any read: one that began before a request arrived may have been answered
before a change that request must see (a revocation committed just before it was sent). So a
request that finds a read on its way waits for the next one, which begins once that one is
answered and serves everybody who came meanwhile: each request still sees what was there when it
arrived, at the cost of at most one more round trip, and a busy loop asks once per round trip
rather than once per request.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Loop(Generic[T]):
    """One loop's state: the read the next arrivals share, and the task that makes the reads."""

    def __init__(self) -> None:
        self.waiting: asyncio.Future[T] | None = None
        self.reader: asyncio.Task[None] | None = None


class SharedRead(Generic[T]):
    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loop[T]] = weakref.WeakKeyDictionary()

    async def __call__(self) -> T:
        """What a read begun after this call found. A caller cancelled while it waits does not
        cancel the read the others wait for."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _Loop()
        if state.waiting is None:
            state.waiting = loop.create_future()
            if state.reader is None:
                state.reader = loop.create_task(self._reads(state))
        return await asyncio.shield(state.waiting)

    async def _reads(self, state: _Loop[T]) -> None:
        """Read for whoever waits, until a read is answered with nobody new waiting."""
        try:
            while state.waiting is not None:
                batch, state.waiting = state.waiting, None
                try:
                    batch.set_result(await self._read())
                except Exception as exc:  # noqa: BLE001 - whatever the read raises, its waiters raise
                    batch.set_exception(exc)
                except asyncio.CancelledError:
                    batch.cancel()
                    if state.waiting is not None:
                        state.waiting.cancel()
                        state.waiting = None
                    raise
        finally:
            state.reader = None
