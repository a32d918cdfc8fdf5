"""A person's username (``preferred_username``): a name they may sign in with besides their address
or number (:func:`~.users.find_by_identifier`), so no two people hold the same one.

It is checked the same wherever it is set: by the person on ``/account`` and in the account API,
by an operator's ``idp users update``, and by ``idp users import``.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage import User
from .errors import AccountError, Code

MAX_USERNAME = 150


class UsernameRefused(AccountError):
    """A username that cannot be kept: ``too_long`` (``max_length``) or ``not_printable``."""

    code = Code.INVALID_USERNAME


class UsernameTaken(AccountError):
    """Another person has this username. Saying so tells whoever asked that the name is in use,
    which choosing a name of one's own cannot avoid; nothing else about its holder is told."""

    code = Code.USERNAME_TAKEN


def clean_username(raw: str | None) -> str | None:
    """The username to keep, without the spaces around it (``None`` for an empty one), or
    :class:`UsernameRefused`."""
    username = (raw or "").strip()
    if len(username) > MAX_USERNAME:
        raise UsernameRefused("too_long", max_length=MAX_USERNAME)
    if not username.isprintable():
        raise UsernameRefused("not_printable")
    return username or None


def asks_another(user: User, raw: str | None) -> bool:
    """Whether ``raw`` names a username other than the person's own: asking for one tells whether
    someone else holds it, which the surfaces spend a rate limit on."""
    username = (raw or "").strip()
    return username not in ("", user.preferred_username or "")


def ensure_free(db: Session, user_id: str, username: str | None) -> None:
    """Raises :class:`UsernameTaken` when someone other than ``user_id`` holds ``username``."""
    if username is None:
        return
    holder = db.scalar(select(User.id).where(User.preferred_username == username, User.id != user_id))
    if holder is not None:
        raise UsernameTaken
