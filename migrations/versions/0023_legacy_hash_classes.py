"""legacy_hash_classes: the cost classes of the imported Django-format hashes still kept, with decoys

Every password sign-in verifies one hash of each class, so that its cost does not tell an unknown
address from an imported person of any class (see ``idp.accounts.legacy_hashes``). A database that
keeps such hashes already gets their classes here, each with a decoy made as an import makes one.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from idp.accounts.legacy_hashes import cost_class, decoy_like

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

LEGACY_PASSWORD = "password_hash NOT LIKE '$%'"
users = sa.table("users", sa.column("password_hash", sa.String))


def upgrade() -> None:
    classes = op.create_table(
        "legacy_hash_classes",
        sa.Column("prefix", sa.String(length=255), nullable=False),
        sa.Column("decoy", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("prefix", name=op.f("pk_legacy_hash_classes")),
    )
    kept: dict[str, str] = {}
    for stored in op.get_bind().scalars(sa.select(users.c.password_hash).where(sa.text(LEGACY_PASSWORD))):
        kept.setdefault(cost_class(stored), stored)
    if kept:
        op.bulk_insert(classes, [{"prefix": prefix, "decoy": decoy_like(stored)} for prefix, stored in kept.items()])


def downgrade() -> None:
    op.drop_table("legacy_hash_classes")
