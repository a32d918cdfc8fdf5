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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
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
        return json.dumps(line, default=str, ensure_ascii=False)


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
    logging.config.dictConfig(logging_config(level))
