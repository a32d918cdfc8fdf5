"""``idp users export``: every person as a JSON line that ``idp users import`` reads back.

People are read a page at a time in the order of their ids (keyset pagination), so the export of
any number of people holds one page in memory and never keeps a long-running transaction open.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..storage import User, UserGroup
from .person_lines import line_of

PAGE = 1000


def export_people(maker: sessionmaker[Session]) -> Iterator[dict[str, Any]]:
    after = ""
    while True:
        with maker() as db:
            page = list(db.scalars(select(User).where(User.id > after).order_by(User.id).limit(PAGE)))
            groups: dict[str, set[str]] = defaultdict(set)
            query = select(UserGroup.user_id, UserGroup.name).where(UserGroup.user_id.in_([u.id for u in page]))
            for user_id, name in db.execute(query):
                groups[user_id].add(name)
        yield from (line_of(user, frozenset(groups[user.id])) for user in page)
        if len(page) < PAGE:
            return
        after = page[-1].id
