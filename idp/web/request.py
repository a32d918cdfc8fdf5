"""The request facts every surface reads: the process's services, the client's address, the key
its rate limits count under, and the request's transaction, whose audit events carry both
address and user agent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from sqlalchemy.orm import Session
from starlette.requests import Request

from .. import audit as audit_log
from ..context import Context
from ..security.client_address import client_address, rate_limit_key


def context(request: Request) -> Context:
    """The process's services, typed: the one way a surface reaches them."""
    return cast(Context, request.app.state.ctx)


def request_address(request: Request) -> str | None:
    return client_address(request, context(request).settings.trusted_proxies)


def rate_limit_address(request: Request) -> str:
    """The client whose budget a request spends: an IPv6 address counts as its network."""
    return rate_limit_key(request_address(request), context(request).settings.rate_limit_ipv6_prefix)


@contextmanager
def transaction(request: Request) -> Iterator[Session]:
    """The request's database session (see :func:`note_origin`)."""
    with context(request).db() as db:
        note_origin(db, request)
        yield db


def note_origin(db: Session, request: Request) -> None:
    """The events services record in ``db`` name the request's address and user agent."""
    audit_log.set_origin(db, lambda: audit_log.Origin(request_address(request), request.headers.get("user-agent")))
