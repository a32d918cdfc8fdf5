"""The one way a request is served, whichever surface it came through.

A handler declares what it needs (:class:`Needs`: its body's fields, the rate limits it spends,
whether it takes the person's row lock) and holds only its own logic. The surface (the hosted
pages, the account API, the endpoints where a client authenticates) says how its caller is
authenticated, how a body is read, and how a refusal is answered. The pipeline does the rest, in
this order and nowhere else:

1. read the body in the event loop, within limits, so that a slow upload never holds a thread
   (a client that hangs up before its body is whole is answered, to nobody, ``408``: what the
   access line says, where it said ``500`` after an error with a traceback);
2. hop to the thread pool once (or, for a request the handler declares it may serve from memory,
   read the caches' change counters ahead and stay in the event loop unless the database is
   needed after all; a count in Redis it needs is made without blocking, and the request served
   again), open the request's one transaction;
3. authenticate the caller (the surface checks CSRF there, for a browser's unsafe request);
4. spend the declared rate limits, for any unsafe method, before anything else is written (a spent
   one rolls back, and commits only what the surface's answer to it writes);
5. take the person's row lock for an unsafe method, and make sure the caller still may act; a
   handler with slow work to do first (hashing a password) declares ``Needs(lock=False)`` and
   takes it itself when that is done, through :meth:`Call.lock`;
6. run the handler;
7. commit, or for a :class:`~idp.errors.Refused` commit only if the error keeps its changes,
   roll back otherwise, and answer it from the surface's table.

So a new handler cannot forget CSRF or its rate limits, and no handler commits.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..caching.generations import Stamp
from ..context import Context
from ..errors import Refused
from ..languages import speak_for
from ..security.rate_limits import CountInRedis, Limit, Refusal
from ..storage.database import NeedsDatabase, commit_begun
from .locale import language
from .request import context, note_origin, rate_limit_address, transaction

SAFE_METHODS = frozenset({"GET", "HEAD"})

Who = TypeVar("Who")


class Throttled(Exception):
    """A rate limit a handler spent (:meth:`Call.spend`) is used up."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.limit.value)
        self.refusal = refusal


class Answer(Exception):
    """A response that ends the request before its handler: a sign-in redirect, a 401."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class Needs:
    """What a handler declares. ``fields`` is the surface's description of its body (``None``:
    it takes none); ``limits`` are spent per client address by any unsafe request."""

    fields: object = None
    limits: tuple[Limit, ...] = ()
    lock: bool = True
    """Whether the pipeline takes the person's row lock before the handler; ``False`` for a
    handler that does slow work first and then calls :meth:`Call.lock`."""
    from_memory: Callable[[object], bool] | None = None
    """Whether a request (as the surface read it) may be served from what the process keeps in
    memory: such a request is served in the event loop, without the hop to a thread, and goes to
    the thread pool only if it turns out to need the database after all. Only for a handler
    whose caller's budget is spent once per request whichever way it is served, and with no
    ``limits``."""


@dataclass
class Call(Generic[Who]):
    """One request as its handler sees it."""

    request: Request
    ctx: Context
    db: Session
    who: Who
    relock: Callable[[], Who]
    values: dict[str, str] = field(default_factory=dict)
    raw: object = None
    """What the surface read, for a handler that needs more than ``values`` (repeated parameters)."""

    def lock(self) -> Who:
        """Take the person's row lock (again, if taken already) and make sure the caller still may
        act: the caller as it stands now, or :class:`Answer`."""
        self.who = self.relock()
        return self.who

    @property
    def unsafe(self) -> bool:
        return self.request.method not in SAFE_METHODS

    def spend(self, limit: Limit, key: str | None = None) -> None:
        """Spend ``limit`` for ``key`` (the client's address by default), for a limit that only
        some requests of a handler spend, or that is keyed by what was posted."""
        refusal = self.ctx.rate_limiter.check(limit, key or rate_limit_address(self.request))
        if refusal is not None:
            raise Throttled(refusal)


class Surface(Protocol[Who]):
    """How one surface reads, authenticates and answers; the pipeline calls these in its order."""

    async def read(self, request: Request, needs: Needs) -> object:
        """The raw body (and whatever else must be read in the event loop); may raise :class:`Answer`."""
        ...

    def authenticate(self, request: Request, ctx: Context, db: Session, raw: object) -> Who:
        """The caller, or :class:`Answer`."""
        ...

    def values(self, call: Call[Who], raw: object, needs: Needs) -> dict[str, str]:
        """The body's values; for an unsafe browser request this is where CSRF is checked."""
        ...

    def relock(self, call: Call[Who], raw: object) -> Call[Who]:
        """After the person's row lock is taken: the caller as it stands now, or :class:`Answer`."""
        ...

    def refused(self, call: Call[Who], refusal: Refusal) -> Response:
        """The answer to a spent rate limit; what it writes (its audit event) is committed, after
        the rollback of everything before it."""
        ...

    def failed(self, call: Call[Who], error: Refused) -> Response:
        """The answer to a refusal, from the surface's table."""
        ...


Handler = Callable[[Call[Who]], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(surface: Surface[Who], needs: Needs, handler: Handler[Who]) -> Endpoint:
    """``handler`` served by the pipeline (see the module's docstring)."""

    if needs.from_memory is not None and needs.limits:
        raise ValueError("a handler served from memory spends no per-address limits")

    @functools.wraps(handler)
    async def serve(request: Request) -> Response:
        try:
            raw = await surface.read(request, needs)
        except Answer as answer:
            return answer.response
        except ClientDisconnect:
            return Response(status_code=408, headers={"Connection": "close"})
        ctx = context(request)
        if needs.from_memory is not None and ctx.serves_from_memory and needs.from_memory(raw):
            stamp = await ctx.generations.read_ahead()
            while stamp is not None:
                try:
                    return _serve(surface, needs, handler, request, raw, stamp)
                except NeedsDatabase:
                    break
                except CountInRedis as count:
                    count.keep(await ctx.rate_limiter.check_async(count.limit, count.key))
        return await run_in_threadpool(_serve, surface, needs, handler, request, raw)

    return serve


def _serve(
    surface: Surface[Who],
    needs: Needs,
    handler: Handler[Who],
    request: Request,
    raw: object,
    stamp: Stamp | None = None,
) -> Response:
    """Serve in one transaction; given the change counters read ahead (``stamp``), from memory
    only (in the thread's lent session), or :class:`NeedsDatabase`."""
    if stamp is None:
        with transaction(request) as db:
            return _serve_in(db, surface, needs, handler, request, raw)
    ctx = context(request)
    with ctx.memory_sessions.lend() as db:
        note_origin(db, request)
        ctx.generations.preset(db, stamp)
        return _serve_in(db, surface, needs, handler, request, raw)


def _serve_in(
    db: Session,
    surface: Surface[Who],
    needs: Needs,
    handler: Handler[Who],
    request: Request,
    raw: object,
) -> Response:
    ctx = context(request)
    speak_for(db, lambda: language(request))
    try:
        who = surface.authenticate(request, ctx, db, raw)
        call = Call(request, ctx, db, who, lambda: surface.relock(call, raw).who, raw=raw)
        call.values = surface.values(call, raw, needs)
        if call.unsafe:
            for limit in needs.limits:
                call.spend(limit)
            if needs.lock:
                call.lock()
        response = handler(call)
    except Throttled as throttled:
        db.rollback()
        response = surface.refused(call, throttled.refusal)
        commit_begun(db)
        return response
    except Answer as answer:
        commit_begun(db)
        return answer.response
    except Refused as error:
        if error.keeps_changes:
            commit_begun(db)
        else:
            db.rollback()
        return surface.failed(call, error)
    commit_begun(db)
    return response
