"""outbox.useful_until: a message is retried until it is no longer useful, then dropped

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 16:51:00.000000

A message queued before this revision has no known lifetime: it gets an hour from when it was
queued, the life of the shortest link (a password reset's). A code sent late is refused by the code's
own expiry, so the hour costs nothing there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UNKNOWN_LIFETIME = 3600


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("useful_until", sa.BigInteger(), nullable=True))
    outbox = sa.table("outbox", sa.column("created_at", sa.BigInteger()), sa.column("useful_until", sa.BigInteger()))
    op.execute(outbox.update().values(useful_until=outbox.c.created_at + UNKNOWN_LIFETIME))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column("useful_until", existing_type=sa.BigInteger(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("useful_until")
