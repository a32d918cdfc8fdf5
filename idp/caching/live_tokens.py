"""Access tokens this process found unrevoked, so that using one again costs no query.

An access token stops being good when its ``jti`` is revoked, or its grant is revoked or deleted;
each of those bumps the revocations' change counter (:class:`~idp.storage.generations.Topic`),
and an entry only counts under the counter it was found under. Expiry is the caller's to check on
every use. At most :data:`MAX_ENTRIES` are kept; the whole set is dropped when it is full.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..storage.generations import Topic
from .generations import Generations

MAX_ENTRIES = 100_000


class LiveTokens:
    def __init__(self, generations: Generations) -> None:
        self.generations = generations
        self._state: tuple[str | None, set[str]] = (None, set())
        """The counter and what was found under it, replaced as one: a thread still working under
        an older counter adds to a set of that counter, never to the newer one's."""

    def known_live(self, db: Session, jti: str) -> bool:
        """Whether ``jti`` was found unrevoked since the last revocation anywhere."""
        live = self._live(db)
        return live is not None and jti in live

    def found_live(self, db: Session, jti: str) -> None:
        """``jti`` was just checked against the database, in ``db``'s transaction, and is unrevoked."""
        live = self._live(db)
        if live is None:
            return
        if len(live) >= MAX_ENTRIES:
            live.clear()
        live.add(jti)

    def _live(self, db: Session) -> set[str] | None:
        stamp = self.generations.read(db)
        if stamp is None:
            return None
        tag = stamp[Topic.REVOCATIONS]
        state = self._state
        if state[0] != tag:
            state = (tag, set())
            self._state = state
        return state[1]
