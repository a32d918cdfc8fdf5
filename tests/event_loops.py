"""Running a coroutine, or work that starts a loop of its own, from a test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def apart(work: Callable[[], T]) -> T:
    """Run ``work`` in a thread of its own: after any browser test, the session's Playwright keeps
    a loop running in the main thread, where ``asyncio.run`` refuses to start and any code asking
    for the running loop finds Playwright's."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()


def run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop of its own thread (:func:`apart`)."""
    return apart(lambda: asyncio.run(coroutine))
