"""generations: a counter per kind of change, for the caches every process keeps

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 21:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    generations = op.create_table(
        "generations",
        sa.Column("topic", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", name=op.f("pk_generations")),
    )
    op.bulk_insert(generations, [{"topic": "clients", "value": 0}, {"topic": "revocations", "value": 0}])


def downgrade() -> None:
    op.drop_table("generations")
