"""generations: a counter for changes to people, for the claims every process keeps

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 02:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

generations = sa.table("generations", sa.column("topic", sa.String), sa.column("value", sa.BigInteger))


def upgrade() -> None:
    op.bulk_insert(generations, [{"topic": "people", "value": 0}])


def downgrade() -> None:
    op.execute(generations.delete().where(generations.c.topic == "people"))
