"""Failures logged once per outage, not once per attempt.

The delivery worker runs every second: while the database is down every round fails the same way,
and a traceback a second buries everything else in the log. So the first failure of an outage is
logged in full, a one-line reminder at most every ``REMINDER_SECONDS`` says that it goes on, and one
line says when it is over (:class:`OutageLog`).

What requests read on the way (the change counters in Redis or in the database, the rate limits'
counts in Redis) fails once per request while it is gone, and each has something to fall back
to: one line when the outage begins and one when it ends say all there is (:class:`Outage`).
"""

from __future__ import annotations

import logging
import time

REMINDER_SECONDS = 60.0


class OutageLog:
    """What one loop (``task``, as the log lines name it) has logged of its current outage."""

    def __init__(self, log: logging.Logger, task: str) -> None:
        self.log = log
        self.task = task
        self.failures = 0
        self.started = 0.0
        self.reminded = 0.0

    def failed(self, exc: BaseException) -> None:
        stamp = time.monotonic()
        self.failures += 1
        if self.failures == 1:
            self.started = self.reminded = stamp
            self.log.error(
                "%s failed; until it recovers, one line every %d s at most says it still fails",
                self.task,
                REMINDER_SECONDS,
                exc_info=exc,
            )
        elif stamp - self.reminded >= REMINDER_SECONDS:
            self.reminded = stamp
            self.log.warning(
                "%s still failing: %d rounds in %.0f s, the last with %s",
                self.task,
                self.failures,
                stamp - self.started,
                type(exc).__name__,
            )

    def succeeded(self) -> None:
        if self.failures:
            self.log.info(
                "%s recovered after %d failed rounds in %.0f s",
                self.task,
                self.failures,
                time.monotonic() - self.started,
            )
            self.failures = 0


class Outage:
    """Whether one dependency is failing: ``began`` is logged at ``level`` (with the failure's
    type for its ``%s``) at the first failure, ``ended`` at the first success after it."""

    def __init__(self, log: logging.Logger, level: int, began: str, ended: str) -> None:
        self.log = log
        self.level = level
        self.began = began
        self.ended = ended
        self.failing = False

    def failed(self, exc: BaseException) -> None:
        if not self.failing:
            self.failing = True
            self.log.log(self.level, self.began, type(exc).__name__)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            self.log.info(self.ended)
