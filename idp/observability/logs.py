"""Structured logs: one JSON object per line, on standard error, from the standard library's logging.

Every line has ``time``, ``level``, ``logger``, ``message`` and the worker's ``pid``; inside a
request it also has that request's ``request_id``: the middleware sets a context variable, which
Starlette carries into the thread pool, and :class:`RequestIdFilter` stamps it on each record as it
is emitted. Fields given as ``extra={...}`` become fields of the line.
``idp serve`` hands :func:`logging_config` to uvicorn and to gunicorn's arbiter, so their own lines
are JSON too (uvicorn's workers under gunicorn write through ``gunicorn.error``'s handler) and their
access logs, which would print query strings, stay off: ours replaces them. It writes its access
lines a loop's turn at a time (:class:`TurnBatchedStreamHandler`).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import logging.config
import os
import select
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("idp_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra``. uvicorn adds
# ``color_message``, the same text with terminal colour codes, which has no place in JSON.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None:
            record.request_id = request_id
        return True


def _standard_fields() -> dict[str, Any]:
    """The fields of a record as the standard constructor makes it, with what
    :func:`configure_logging` turns off turned off."""
    probe = logging.LogRecord("", logging.INFO, "(unknown file)", 0, "", None, None, "(unknown function)")
    fields = vars(probe)
    fields.update(thread=None, threadName=None, processName=None)
    if "taskName" in fields:
        fields["taskName"] = None
    return fields


_STANDARD_FIELDS = _standard_fields()
_LOGGING_LOADED = _STANDARD_FIELDS["created"] - _STANDARD_FIELDS["relativeCreated"] / 1000


class AccessRecord(logging.LogRecord):
    """The record of a request's access line, made without the work the standard constructor
    does each time for what no access line holds (the source file, the thread, the process
    name): those fields are copied, in their order, from a record it made once, so that any
    handler or formatter finds each of them. A server makes one per request, and runs the logging
    code cold each time: with ``idp serve --workers 2`` under load, the access line was 21 of the
    73 us of CPU a JWKS request took, three times what it takes in a tight loop. This record and
    handing it straight to :meth:`logging.Logger.handle` took 7 to 13 us off each such request."""

    def __init__(self, name: str, message: str, fields: dict[str, Any]) -> None:
        created = time.time()
        self.__dict__.update(_STANDARD_FIELDS)
        self.name = name
        self.msg = message
        self.args = None
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0
        self.relativeCreated = (created - _LOGGING_LOADED) * 1000
        self.process = os.getpid()
        self.__dict__.update(fields)


_FALLBACK = json.JSONEncoder(default=str, ensure_ascii=False)


def _encode(line: dict[str, Any]) -> str:
    """orjson, several times faster than the standard library's encoder; a value it refuses (an
    integer wider than 64 bits) is written by the standard library's, so that no line is lost."""
    try:
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return _FALLBACK.encode(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per record. A server writes a line for every request, so the time is
    written from the second it falls in, formatted once per second, and orjson encodes it."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
            self._second, self._second_text = second, moment.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        line.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _encode(line)


class TurnBatchedStreamHandler(logging.StreamHandler[TextIO]):
    """Access lines (:class:`AccessRecord`, one a request) emitted in a thread running an event
    loop are held until the loop's next turn and written together; any other line is written at
    once, after what is held, so that the order stays. A write of its own for each access line
    cost a system call and, with several workers on one file or pipe, a wait for the others'
    writes. Only access lines wait: uvicorn ends a worker stopped by a signal by raising it again
    right after its last line, which ends the process there, and an error may be the last thing
    a process says. What is held is written in pieces of at most ``PIPE_BUF`` bytes, cut at line
    ends, so that workers writing to one pipe never mix their lines; and when logging shuts down."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._held: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None
        """The loop that has a flush of what is held to run, if any; a loop closed before its
        next turn drops it, and the next loop to hold a line asks again."""
        self._last: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging never raises into the code that logs
            self.handleError(record)
            return
        self._last = record
        self._held.append(line)
        access = isinstance(record, AccessRecord)
        loop = asyncio._get_running_loop() if access else None  # noqa: SLF001 - asyncio's own cheap check
        if loop is None:
            self._write_held()
        elif self._flush_on is not loop:
            loop.call_soon(self.flush)
            self._flush_on = loop

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # a Handler makes its lock when it is made
            self._write_held()

    def _write_held(self) -> None:
        held, self._held, self._flush_on = self._held, [], None
        try:
            for piece in _pieces(held):
                self.stream.write(piece)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as StreamHandler.emit: reported, never raised
            if self._last is not None:
                self.handleError(self._last)
        self._last = None


def _pieces(lines: list[str]) -> Iterator[str]:
    """``lines`` joined into pieces of at most ``PIPE_BUF`` bytes in UTF-8, which a pipe takes
    whole, cut between lines (a longer line is a piece of its own)."""
    piece: list[str] = []
    size = 0
    for line in lines:
        length = len(line) if line.isascii() else len(line.encode())
        if piece and size + length > select.PIPE_BUF:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += length
    if piece:
        yield "".join(piece)


def logging_config(level: int, *, batched: bool = False) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` configuration: everything as JSON lines on standard
    error; ``batched`` for a server, its access lines a loop's turn at a time. The commands write
    each line at once: run in a process where another library's loop stays open, as in a test, a
    held line would wait for that loop."""
    name = logging.getLevelName(level)
    handler = f"{__name__}.TurnBatchedStreamHandler" if batched else "logging.StreamHandler"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "handlers": {
            "stderr": {
                "class": handler,
                "formatter": "json",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": name, "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {"level": name, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": name, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
            "gunicorn.error": {"level": name, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }


def configure_logging(level: int, *, batched: bool = False) -> None:
    """Also turns off what a record would gather that no line shows: the calling frame, the
    thread, the multiprocessing process name and the asyncio task's name (the logging HOWTO's
    "Optimization"); the forked workers of ``idp serve`` inherit it."""
    logging._srcfile = None  # noqa: SLF001 - the documented switch for the caller's frame
    logging.logThreads = False
    logging.logMultiprocessing = False
    if sys.version_info >= (3, 12):
        logging.logAsyncioTasks = False
    logging.config.dictConfig(logging_config(level, batched=batched))
