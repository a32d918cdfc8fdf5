"""Structured logs: one JSON object per line, on standard error, from the standard library's logging.

Every line has ``time``, ``level``, ``logger``, ``message`` and the worker's ``pid``; inside a
request it also has that request's ``request_id``: the middleware sets a context variable, which
Starlette carries into the thread pool, and :class:`RequestIdFilter` stamps it on each record as it
is emitted. Fields given as ``extra={...}`` become fields of the line.
``idp serve`` hands :func:`logging_config` to uvicorn and to gunicorn's arbiter, so their own lines
are JSON too (uvicorn's workers under gunicorn write through ``gunicorn.error``'s handler) and their
access logs, which would print query strings, stay off: ours replaces them. Its lines are written
a loop's turn at a time (:class:`TurnBatchedStreamHandler`).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import logging.config
import os
import time
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
    """Lines emitted in a thread running an event loop are held until the loop's next turn and
    written together; a line from any other thread (the thread pool, gunicorn's arbiter) is written
    at once, after what is held, so that the order stays. A server writes a line for every request,
    and a write of its own for each cost a system call and, with several workers on one file or
    pipe, a wait for the others' writes: 28 us of an 80 us JWKS request. What is held when logging
    shuts down is written then."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._held: list[str] = []
        self._last: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging never raises into the code that logs
            self.handleError(record)
            return
        self._last = record
        loop = asyncio._get_running_loop()  # noqa: SLF001 - the cheap check asyncio itself uses
        if loop is None:
            self._held.append(line)
            self._write_held()
            return
        if not self._held:
            loop.call_soon(self.flush)
        self._held.append(line)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # a Handler makes its lock when it is made
            self._write_held()

    def _write_held(self) -> None:
        text, self._held = "".join(self._held), []
        try:
            if text:
                self.stream.write(text)
            self.stream.flush()
        except Exception:  # noqa: BLE001 - as StreamHandler.emit: reported, never raised
            if self._last is not None:
                self.handleError(self._last)


def logging_config(level: int, *, batched: bool = False) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` configuration: everything as JSON lines on standard
    error; ``batched`` for a server, a loop's turn at a time. The commands write each line at once:
    run in a process where another library's loop stays open, as in a test, a held line would wait
    for that loop."""
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
    """Also turns off what a record would gather that no line shows: the calling frame, the thread
    and the multiprocessing process name (the logging HOWTO's "Optimization"); the forked workers
    of ``idp serve`` inherit it."""
    logging._srcfile = None  # noqa: SLF001 - the documented switch for the caller's frame
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.config.dictConfig(logging_config(level, batched=batched))
