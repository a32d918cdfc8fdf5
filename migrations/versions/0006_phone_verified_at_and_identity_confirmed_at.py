"""users.phone_verified_at and users.identity_confirmed_at: which numbers came after the last proof

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phone_verified_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("identity_confirmed_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("identity_confirmed_at")
        batch_op.drop_column("phone_verified_at")
