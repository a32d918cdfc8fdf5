"""action_tokens.phone: the number given at registration, waiting for the address to be verified

A phone number typed at registration is no longer kept on the account unproven: its verification
link keeps it, and once the address is verified a code goes to it, as a number added on /account
gets one. Links made before this revision have none; the numbers already on accounts stay.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("action_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phone", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("action_tokens", schema=None) as batch_op:
        batch_op.drop_column("phone")
