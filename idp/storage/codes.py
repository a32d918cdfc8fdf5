"""Short secrets sent to people: one-time codes, and the tokens in emailed links."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class OneTimeCode(Base):
    """A six-digit code for one purpose and one email or phone, kept as a keyed hash.

    Purposes: ``sign_in`` (passwordless), ``second_factor``, ``verify_phone``, ``enable_mfa``,
    ``set_password`` (a first password on an account without one).
    """

    __tablename__ = "one_time_codes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(24))
    identifier: Mapped[str] = mapped_column(String(320), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    consumed_at: Mapped[int | None] = mapped_column(BigInteger)


class ActionToken(Base):
    """The token of an emailed link: ``verify_email`` (24 hours), ``reset_password`` (1 hour) or
    ``change_email`` (24 hours; ``email`` is then the new address).

    ``authorization_request_id`` lets a person who started at a relying app land back there;
    ``browser_hash`` is the digest of a cookie of the one browser the link may sign in: for
    ``verify_email``, the browser that registered the account, whoever asked for the link; and
    ``phone``, for ``verify_email``, a number given at registration, sent a code once the address
    is verified.
    """

    __tablename__ = "action_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(24))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    authorization_request_id: Mapped[str | None] = mapped_column(String(64))
    browser_hash: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    used_at: Mapped[int | None] = mapped_column(BigInteger)
