"""users.registration_browser_hash: the browser that registered an account it has not proven yet

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:00:00.000000

Accounts that exist before this revision get none: their verification links ask for the password
in every browser, and cleanup never removes them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("registration_browser_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("registration_browser_hash")
