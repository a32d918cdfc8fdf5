"""clients.jwks_checked_at: when a client's JWKS was last asked for, whatever came of it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("jwks_checked_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("jwks_checked_at")
