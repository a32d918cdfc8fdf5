"""clients.logo_uri, policy_uri, tos_uri: what the sign-in and consent pages show of a client

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

COLUMNS = ("logo_uri", "policy_uri", "tos_uri")


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.String(length=2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
