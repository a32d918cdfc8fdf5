"""users.terms_version and terms_accepted_at: which terms a person accepted, and when

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 17:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("terms_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("terms_accepted_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("terms_accepted_at")
        batch_op.drop_column("terms_version")
