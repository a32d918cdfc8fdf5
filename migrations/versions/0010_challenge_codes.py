"""authorization_codes.redirect_uri may be empty: a code issued at the authorization challenge endpoint
(OAuth 2.0 for First-Party Applications) goes back in the response body, to no redirect URI

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.alter_column("redirect_uri", existing_type=sa.String(length=2000), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM authorization_codes WHERE redirect_uri IS NULL")
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.alter_column("redirect_uri", existing_type=sa.String(length=2000), nullable=False)
