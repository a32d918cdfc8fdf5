"""``idp users import``: people from JSON lines, in batches of one transaction each.

Each line is checked on its own (:mod:`.person_lines`), then against the lines before it and the
database: an email address, phone number or username already another person's refuses the line,
and nothing of it is written. Hashes are kept as the file gives them (no argon2 per line), and a
batch is written with one multi-row insert, so a hundred thousand people take minutes, not hours.

Running the same file again changes nothing: a line equal to the person stored is ``unchanged``.
A line whose person exists but differs updates that person's profile, flags and groups (it is
counted as imported); its password is written only when the person has none, so a second run never
brings back an old hash over the argon2id one a sign-in made, or over a password changed since.

A batch that keeps a hash of a cost class not yet recorded records it with a decoy, in the same
transaction (:func:`.legacy_hashes.record_cost_classes`): from then on every password sign-in
verifies one hash of that class too, until nobody keeps one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..storage import User, UserGroup, now
from .legacy_hashes import record_cost_classes
from .person_lines import LineError, PersonLine, parse_line

BATCH = 1000
UNIQUE = {"email": User.email, "phone_number": User.phone, "preferred_username": User.preferred_username}


@dataclass
class Summary:
    """What ``idp users import`` prints when it is done."""

    imported: int = 0
    unchanged: int = 0
    failed: int = 0
    new_cost_classes: set[str] = field(default_factory=set)
    """Cost classes of Django-format hashes the run recorded (:mod:`.legacy_hashes`)."""


Refuse = Callable[[int, str], None]
"""Told each bad line's number and why."""


@dataclass
class _Claims:
    """Which line first named each id, email address, phone number and username of the file."""

    by_value: dict[tuple[str, str], int] = field(default_factory=dict)

    def take(self, number: int, person: PersonLine) -> None:
        keys = [("id", person.id), *person.unique_values().items()]
        for key in keys:
            if key in self.by_value:
                raise LineError(f"{key[0]}: already on line {self.by_value[key]}")
        for key in keys:
            self.by_value[key] = number


def import_people(
    maker: sessionmaker[Session],
    lines: Iterable[bytes],
    *,
    dry_run: bool,
    refuse: Refuse,
    progress: Callable[[Summary], None] | None = None,
) -> Summary:
    """Read ``lines`` one by one (a file of any size), writing every :data:`BATCH` good ones in
    one transaction; with ``dry_run`` each transaction is rolled back instead, so the counts are
    those a real run would give."""
    summary = Summary()
    claims = _Claims()
    batch: list[tuple[int, PersonLine]] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            person = parse_line(text)
            claims.take(number, person)
        except LineError as exc:
            _refused(summary, refuse, number, str(exc))
            continue
        batch.append((number, person))
        if len(batch) == BATCH:
            _write_batch(maker, batch, dry_run, summary, refuse)
            batch = []
            if progress is not None:
                progress(summary)
    if batch:
        _write_batch(maker, batch, dry_run, summary, refuse)
    return summary


def _refused(summary: Summary, refuse: Refuse, number: int, why: str) -> None:
    summary.failed += 1
    refuse(number, why)


def _write_batch(
    maker: sessionmaker[Session], batch: list[tuple[int, PersonLine]], dry_run: bool, summary: Summary, refuse: Refuse
) -> None:
    """One transaction for the batch. Should a person made meanwhile (a registration) take an
    address the batch checked as free, the insert fails: each line is then written on its own, so
    that only the line that clashes is refused."""
    try:
        outcome = _write(maker, batch, dry_run)
    except IntegrityError:
        if len(batch) == 1:
            _refused(summary, refuse, batch[0][0], "clashes with an account made meanwhile")
            return
        for one in batch:
            _write_batch(maker, [one], dry_run, summary, refuse)
        return
    imported, unchanged, refusals, new_cost_classes = outcome
    summary.imported += imported
    summary.unchanged += unchanged
    summary.new_cost_classes.update(new_cost_classes)
    for number, why in refusals:
        _refused(summary, refuse, number, why)


Written = tuple[int, int, list[tuple[int, str]], list[str]]
"""A batch's outcome: lines imported, lines unchanged, the refused ones' numbers and why, and the
cost classes it recorded."""


def _write(maker: sessionmaker[Session], batch: list[tuple[int, PersonLine]], dry_run: bool) -> Written:
    with maker() as db:
        ids = [person.id for _, person in batch]
        stored = {user.id: user for user in db.scalars(select(User).where(User.id.in_(ids)))}
        groups: dict[str, set[str]] = defaultdict(set)
        for user_id, name in db.execute(select(UserGroup.user_id, UserGroup.name).where(UserGroup.user_id.in_(ids))):
            groups[user_id].add(name)
        owners = _owners(db, [person for _, person in batch])
        new: list[PersonLine] = []
        changed: list[tuple[User, PersonLine]] = []
        refusals: list[tuple[int, str]] = []
        unchanged = 0
        for number, person in batch:
            clash = _clash(owners, person)
            user = stored.get(person.id)
            if clash is not None:
                refusals.append((number, f"{clash}: already another person's"))
            elif user is None:
                new.append(person)
            elif _same(user, groups[user.id], person):
                unchanged += 1
            else:
                changed.append((user, person))
        kept = [person.password_hash for person in new]
        kept += [person.password_hash for user, person in changed if user.password_hash is None]
        _insert(db, new)
        for user, person in changed:
            _update(db, user, groups[user.id], person)
        new_cost_classes = record_cost_classes(db, (stored for stored in kept if stored is not None))
        db.flush()
        if dry_run:
            db.rollback()
        else:
            db.commit()
    return len(new) + len(changed), unchanged, refusals, new_cost_classes


def _owners(db: Session, people: list[PersonLine]) -> dict[tuple[str, str], str]:
    """Whose each email address, phone number and username of the batch is in the database."""
    owners: dict[tuple[str, str], str] = {}
    for key, column in UNIQUE.items():
        values = [value for person in people if (value := person.unique_values().get(key)) is not None]
        if values:
            for user_id, value in db.execute(select(User.id, column).where(column.in_(values))):
                owners[(key, str(value))] = user_id
    return owners


def _clash(owners: dict[tuple[str, str], str], person: PersonLine) -> str | None:
    """The first field whose value the database holds for someone else."""
    for key in person.unique_values().items():
        owner = owners.get(key)
        if owner is not None and owner != person.id:
            return key[0]
    return None


def _same(user: User, groups: set[str], person: PersonLine) -> bool:
    profile = person.profile()
    return (
        all(getattr(user, column) == value for column, value in profile.items())
        and groups == person.groups
        and (user.password_hash is not None or person.password_hash is None)
    )


def _insert(db: Session, people: list[PersonLine]) -> None:
    if not people:
        return
    stamp = now()
    rows: list[dict[str, Any]] = [
        {
            "id": person.id,
            "created_at": stamp,
            **person.profile(),
            "password_hash": person.password_hash,
            "disabled": False,
            "failed_sign_ins": 0,
            "updated_at": stamp,
        }
        for person in people
    ]
    # Core's executemany: the ORM's bulk insert would split the rows by which values are None,
    # into hundreds of statements a batch.
    db.execute(insert(cast(Table, User.__table__)), rows)
    memberships = [{"user_id": person.id, "name": name} for person in people for name in sorted(person.groups)]
    if memberships:
        db.execute(insert(cast(Table, UserGroup.__table__)), memberships)


def _update(db: Session, user: User, groups: set[str], person: PersonLine) -> None:
    for column, value in person.profile().items():
        setattr(user, column, value)
    if user.password_hash is None:
        user.password_hash = person.password_hash
    user.updated_at = now()
    if groups != person.groups:
        db.execute(delete(UserGroup).where(UserGroup.user_id == user.id))
        db.add_all(UserGroup(user_id=user.id, name=name) for name in sorted(person.groups))
