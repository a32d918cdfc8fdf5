"""Registered clients as every process keeps them: read from the database once per change.

An entry is a detached copy tagged with the clients' change counter it was read under, shared by
every request of the process that finds it fresh: it is read, never changed, and never added to a
session (a client is changed only through :mod:`idp.oauth.clients`, on its own row). Only
clients that exist are kept, and at most :data:`MAX_ENTRIES`, so that asking for made-up ids
cannot grow a process.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, make_transient_to_detached

from ..storage import Client
from ..storage.generations import Topic
from .generations import Generations

MAX_ENTRIES = 10_000


class ClientCache:
    def __init__(self, generations: Generations) -> None:
        self.generations = generations
        self._entries: dict[str, tuple[str, Client]] = {}

    def get(self, db: Session, client_id: str) -> Client | None:
        """The client as it is now; ``None`` for one that does not exist."""
        stamp = self.generations.read(db)
        if stamp is None:
            return db.get(Client, client_id)
        tag = stamp[Topic.CLIENTS]
        entry = self._entries.get(client_id)
        if entry is not None and entry[0] == tag:
            return entry[1]
        client = db.get(Client, client_id)
        if client is not None:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[client_id] = (tag, _detached_copy(client))
        return client


def _detached_copy(client: Client) -> Client:
    copy = Client(**{column.key: getattr(client, column.key) for column in Client.__table__.columns})
    make_transient_to_detached(copy)
    return copy
