"""users.picture and users.address; requested_claims on authorization codes and grants

A person's profile picture and postal address (OpenID Connect Core §5.1), and the claims an
authorization request asked for by name (§5.5), kept with its code and then its grant so that a
refresh issues them again.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("picture", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("address", sa.JSON(), nullable=True))
    for table in ("authorization_codes", "grants"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("requested_claims", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in ("grants", "authorization_codes"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("requested_claims")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("address")
        batch_op.drop_column("picture")
