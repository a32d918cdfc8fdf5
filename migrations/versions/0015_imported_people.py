"""People brought from another system: their ids as they were, names, username, time zone, groups

Ids widen from 32 to 64 characters (a Django id is an integer or a UUID; it becomes the ``sub``
apps already hold), in ``users`` and wherever a person's id is kept. The partial index finds a
Django-format password hash while any is left (see ``idp.accounts.legacy_hashes``).

On SQLite a declared ``VARCHAR`` length is not enforced and does not change how a row is stored,
so the tables' declarations are rewritten in place (SQLite's documented procedure for schema
changes that leave the stored content as it is) instead of copying every table: a copy of
``users`` would have to drop the table while foreign keys are on, and its cascades would empty
every table that refers to it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 16:30:00.000000
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

PERSON_ID_COLUMNS = {
    "users": "id",
    "authorization_codes": "user_id",
    "grants": "user_id",
    "browser_sessions": "user_id",
    "consents": "user_id",
    "pending_sign_ins": "user_id",
    "one_time_codes": "user_id",
    "action_tokens": "user_id",
    "password_history": "user_id",
    "recovery_codes": "user_id",
    "audit_events": "user_id",
}
LEGACY_PASSWORD = "password_hash NOT LIKE '$%'"


def upgrade() -> None:
    _resize_person_ids(32, 64)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("given_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("family_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("preferred_username", sa.String(length=150), nullable=True))
        batch_op.add_column(sa.Column("zoneinfo", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_users_preferred_username"), "users", ["preferred_username"], unique=True)
    op.create_index(
        "ix_users_legacy_password",
        "users",
        ["id"],
        postgresql_where=sa.text(LEGACY_PASSWORD),
        sqlite_where=sa.text(LEGACY_PASSWORD),
    )
    op.create_table(
        "user_groups",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=150), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_groups_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "name", name=op.f("pk_user_groups")),
    )
    op.create_index(op.f("ix_user_groups_name"), "user_groups", ["name"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_user_groups_name"), table_name="user_groups")
    op.drop_table("user_groups")
    op.drop_index("ix_users_legacy_password", table_name="users")
    op.drop_index(op.f("ix_users_preferred_username"), table_name="users")
    # ALTER TABLE ... DROP COLUMN, on SQLite too: a batch copy would empty the tables that refer to users.
    for column in ("zoneinfo", "preferred_username", "family_name", "given_name"):
        op.drop_column("users", column)
    _resize_person_ids(64, 32)


def _resize_person_ids(old: int, new: int) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        for table, column in PERSON_ID_COLUMNS.items():
            op.alter_column(table, column, type_=sa.String(length=new), existing_type=sa.String(length=old))
        return
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    for table, column in PERSON_ID_COLUMNS.items():
        sql = bind.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"), {"name": table}
        ).scalar_one()
        pattern = re.compile(rf'(\b{column}"?\s+VARCHAR)\({old}\)', re.IGNORECASE)
        rewritten, count = pattern.subn(rf"\g<1>({new})", sql, count=1)
        if count != 1:
            raise RuntimeError(f"{table}.{column} is not declared VARCHAR({old})")
        bind.execute(
            sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = :name"),
            {"sql": rewritten, "name": table},
        )
    bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema=OFF")
