"""clients.sign_in: a client's sign-in may lead with the code page; authorization_requests.hint_code_tried:
the code to a request's login_hint goes at most once

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 16:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sign_in", sa.String(length=16), nullable=False, server_default="password"))
    with op.batch_alter_table("authorization_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hint_code_tried", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("authorization_requests", schema=None) as batch_op:
        batch_op.drop_column("hint_code_tried")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("sign_in")
