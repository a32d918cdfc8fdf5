"""clients.auth_method_pinned: whether a client must send its secret the one way it registered

A client registered without naming a method may send its secret in the Basic header or in the
body. Rows from before this revision cannot say whether their method was named: those of
``client_secret_post`` were (it was never the default) and stay pinned; those of
``client_secret_basic`` (the default) become unpinned, as if registered today without a method.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auth_method_pinned", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.execute(
        sa.text(
            "UPDATE clients SET auth_method_pinned = :unpinned WHERE token_endpoint_auth_method = :default"
        ).bindparams(unpinned=False, default="client_secret_basic")
    )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("auth_method_pinned")
