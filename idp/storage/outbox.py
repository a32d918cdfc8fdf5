"""The outbox: email and SMS waiting for delivery, written in the transaction that caused them.

A row exists exactly when what caused it committed, so a restart or a crash loses nothing: any
process's worker picks it up. ``body`` holds the rendered message sealed with a key derived from
``IDP_SECRET_KEY`` (it carries one-time codes and links), and is cleared once it is no longer needed.
``useful_until`` is when what the message carries stops being worth sending (a code's expiry, a
link's, a notice's staleness): the worker retries until then, and drops it after.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(8))
    recipient: Mapped[str] = mapped_column(String(320))
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger, index=True)
    useful_until: Mapped[int] = mapped_column(BigInteger)
    claimed_until: Mapped[int | None] = mapped_column(BigInteger)
    sent_at: Mapped[int | None] = mapped_column(BigInteger)
    failed_at: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(String(200))
