"""Structured logs: one JSON object per line, on standard error, from the standard library's logging.

Every line has ``time``, ``level``, ``logger``, ``message`` and the worker's ``pid``; inside a
request it also has that request's ``request_id``: the middleware sets a context variable, which
Starlette carries into the thread pool, and :class:`RequestIdFilter` stamps it on each record as it
is emitted. Fields given as ``extra={...}`` become fields of the line.
``idp serve`` hands :func:`logging_config` to uvicorn and to gunicorn's arbiter, so their own lines
are JSON too (uvicorn's workers under gunicorn write through ``gunicorn.error``'s handler) and their
access logs, which would print query strings, stay off: ours replaces them.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.config
from contextvars import ContextVar
from typing import Any

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


def logging_config(level: int) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` configuration: everything as JSON lines on standard error."""
    name = logging.getLevelName(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
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


def configure_logging(level: int) -> None:
    """Also turns off what a record would gather that no line shows: the calling frame, the thread
    and the multiprocessing process name (the logging HOWTO's "Optimization"); the forked workers
    of ``idp serve`` inherit it."""
    logging._srcfile = None  # noqa: SLF001 - the documented switch for the caller's frame
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.config.dictConfig(logging_config(level))
