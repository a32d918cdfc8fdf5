"""People as every process keeps them for UserInfo: their claims, read once per change.

An entry holds what an app may be told about a person (every claim they have a value for, and
whether they are disabled), tagged with the people's change counter it was read under
(:mod:`idp.storage.people_changes` bumps it on every change to a claim, a group, or the person's
being disabled or deleted). Only people who exist are kept, and at most :data:`MAX_ENTRIES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ..oauth import scopes
from ..storage import User
from ..storage.generations import Topic
from .generations import Generations

MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Person:
    id: str
    disabled: bool
    claims: dict[str, object]

    def released(self, wanted: set[str]) -> dict[str, object]:
        """The claims of ``wanted`` the person has, in :data:`~idp.oauth.scopes.CLAIMS`' order."""
        return {claim: value for claim, value in self.claims.items() if claim in wanted}


class PeopleCache:
    def __init__(self, generations: Generations) -> None:
        self.generations = generations
        self._entries: dict[str, tuple[str, Person]] = {}

    def get(self, db: Session, user_id: str) -> Person | None:
        """The person as they are now; ``None`` for one who does not exist."""
        stamp = self.generations.read(db)
        tag = stamp[Topic.PEOPLE] if stamp is not None else None
        entry = self._entries.get(user_id)
        if entry is not None and entry[0] == tag:
            return entry[1]
        user = db.get(User, user_id)
        if user is None:
            return None
        person = Person(user.id, user.disabled, scopes.every_claim(db, user))
        if tag is not None:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[user_id] = (tag, person)
        return person
