"""Storage: the models and the migrations agree, migrations run both ways, secrets rest as hashes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, select, text

from idp.migrate import alembic_config, upgrade
from idp.security.digests import keyed_digest
from idp.storage import Base, Client, RefreshToken, make_engine

from .flows import exchange, pkce_pair, sign_in
from .services import own_database


def schema_diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def head_revision(url: str) -> str:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def tables_of(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_models_and_migrations_agree(own_database_url):
    """On PostgreSQL in CI too: the proof that the same migrations fit both back ends."""
    url = own_database_url
    command.upgrade(alembic_config(url), "head")
    assert current_revision(url) == head_revision(url)
    assert schema_diff(url) == []


def _sorted(items: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True, default=str) for item in items)


def schema_of(url: str) -> dict[str, Any]:
    """All a database holds of its schema, its change counters and its revision, in an order of
    its own (the migrations add columns at the end of a table; created, a column is where its
    model has it)."""
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        tables = {
            table: {
                "columns": _sorted(inspector.get_columns(table)),
                "primary key": inspector.get_pk_constraint(table),
                "foreign keys": _sorted(inspector.get_foreign_keys(table)),
                "indexes": _sorted(inspector.get_indexes(table)),
                "unique": _sorted(inspector.get_unique_constraints(table)),
                "checks": _sorted(inspector.get_check_constraints(table)),
            }
            for table in inspector.get_table_names()
        }
        if engine.dialect.name == "postgresql":
            query = "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        else:
            query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        with engine.connect() as connection:
            indexes = sorted(connection.execute(text(query)).scalars())
            counters = sorted(tuple(row) for row in connection.execute(text("SELECT topic, value FROM generations")))
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()
    return {"tables": tables, "index definitions": indexes, "counters": counters, "revision": revision}


def test_an_empty_database_is_created_as_the_migrations_would_leave_it(own_database_url, tmp_path):
    """``upgrade`` creates an empty database from the models without running the migrations;
    compared on the suite's back end, column by column and index by index, with one the migrations
    made, down to the partial index's condition, the change counters' rows and the revision."""
    migrated = own_database_url
    command.upgrade(alembic_config(migrated), "head")
    (tmp_path / "created").mkdir()
    with own_database(tmp_path / "created") as created:
        upgrade(created)
        schema = schema_of(created)
    assert schema == schema_of(migrated)
    assert schema["counters"] == [("clients", 0), ("people", 0), ("revocations", 0)]


def test_a_failed_creation_leaves_the_database_empty(own_database_url):
    """The creation is one transaction: a statement failing at its very end leaves no table
    behind, and the next start creates the database whole."""
    url = own_database_url

    def refuse_the_revision(_connection, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO alembic_version"):
            raise RuntimeError("the database went away")

    event.listen(Engine, "before_cursor_execute", refuse_the_revision)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            upgrade(url)
    finally:
        event.remove(Engine, "before_cursor_execute", refuse_the_revision)
    assert tables_of(url) == set()

    upgrade(url)
    assert current_revision(url) == head_revision(url)
    assert schema_diff(url) == []


def test_downgrade_to_base_and_upgrade_again(own_database_url):
    """On the suite's back end, so that every downgrade runs on PostgreSQL too in CI."""
    url = own_database_url
    model_tables = set(Base.metadata.tables)
    upgrade(url)
    assert model_tables <= tables_of(url)

    command.downgrade(alembic_config(url), "base")
    assert current_revision(url) is None
    assert tables_of(url) & model_tables == set()

    upgrade(url)
    assert current_revision(url) == head_revision(url)
    assert model_tables <= tables_of(url)
    assert schema_diff(url) == []


def test_the_legacy_password_index_is_partial(database_url):
    """Migration 0015 makes it partial, and so does the creation of an empty database (as the
    suite's was); the model leaves the condition out (see ``User``), and Alembic's comparison does
    not look at it, so this is what checks it on each back end."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_users_legacy_password'"
            else:
                query = "SELECT sql FROM sqlite_master WHERE name = 'ix_users_legacy_password'"
            definition = connection.execute(text(query)).scalar_one()
    finally:
        engine.dispose()
    # PostgreSQL gives the condition back in its own words: ((password_hash)::text !~~ '$%'::text).
    condition = definition.upper().partition(" WHERE ")[2]
    assert "PASSWORD_HASH" in condition and "'$%'" in condition


def _only_outbox_row(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT * FROM outbox")).mappings().one())


def test_dropping_the_outbox_subject_keeps_queued_messages(own_database_url):
    url = own_database_url
    config = alembic_config(url)
    command.upgrade(config, "0004")
    queued = {
        "id": "m1",
        "channel": "email",
        "recipient": "a@example.com",
        "body": "sealed",
        "created_at": 1,
        "attempts": 0,
        "next_attempt_at": 1,
    }
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO outbox (id, channel, recipient, body, created_at, attempts, next_attempt_at)"
                    " VALUES (:id, :channel, :recipient, :body, :created_at, :attempts, :next_attempt_at)"
                ),
                queued,
            )

        upgrade(url)
        row = _only_outbox_row(engine)
        assert "subject" not in row
        assert {key: row[key] for key in queued} == queued

        command.downgrade(config, "0004")
        row = _only_outbox_row(engine)
        assert row["subject"] is None
        assert {key: row[key] for key in queued} == queued
    finally:
        engine.dispose()


def test_clients_registered_before_pinning_keep_how_they_authenticate(own_database_url):
    """Before 0016 a client of ``client_secret_post`` had named it (it was never the default) and
    stays pinned; one of ``client_secret_basic`` may have taken the default, and now accepts either."""
    url = own_database_url
    command.upgrade(alembic_config(url), "0012")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for client_id, method in [
                ("basic", "client_secret_basic"),
                ("post", "client_secret_post"),
                ("spa", "none"),
            ]:
                connection.execute(
                    text(
                        "INSERT INTO clients (id, name, redirect_uris, post_logout_redirect_uris, scope, grant_types,"
                        " token_endpoint_auth_method, first_party, created_at)"
                        " VALUES (:id, 'App', '[]', '[]', 'openid', '[]', :method, false, 1)"
                    ),
                    {"id": client_id, "method": method},
                )
        upgrade(url)
        with engine.connect() as connection:
            pinned = {
                row.id: row.auth_method_pinned
                for row in connection.execute(text("SELECT id, auth_method_pinned FROM clients"))
            }
        assert pinned == {"basic": False, "post": True, "spa": True}
    finally:
        engine.dispose()


def test_a_message_queued_before_useful_until_existed_is_retried_for_an_hour(own_database_url):
    """Its lifetime is unknown: an hour, a reset link's, the shortest a link has."""
    url = own_database_url
    command.upgrade(alembic_config(url), "0005")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO outbox (id, channel, recipient, body, created_at, attempts, next_attempt_at)"
                    " VALUES ('m1', 'email', 'a@example.com', 'sealed', 1000, 2, 1040)"
                )
            )
        upgrade(url)
        assert _only_outbox_row(engine)["useful_until"] == 1000 + 3600
    finally:
        engine.dispose()


def _every_stored_text(ctx) -> str:
    """Every value of every column of every table, as one string to search secrets in."""
    chunks: list[str] = []
    with ctx.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    if value is None:
                        continue
                    chunks.append(value if isinstance(value, str) else json.dumps(value, default=str))
        # Tables the models do not know about (alembic_version, anything a migration left) too.
        for name in set(inspect(connection).get_table_names()) - set(Base.metadata.tables):
            for row in connection.execute(text(f'SELECT * FROM "{name}"')):
                chunks.extend(str(value) for value in row if value is not None)
    return "\n".join(chunks)


def test_secrets_rest_only_as_hashes(http, ctx, make_client, make_user):
    client = make_client(scope="openid profile email offline_access")
    user = make_user()
    verifier, challenge = pkce_pair()
    callback = sign_in(http, client, user, challenge)
    code = callback["code"]
    response = exchange(http, client, code, verifier)
    assert response.status_code == 200, response.text
    tokens = response.json()
    refresh_token = tokens["refresh_token"]
    cookies = [value for value in http.cookies.values() if len(value) >= 20]
    assert cookies, "the sign-in left no session cookie"

    stored = _every_stored_text(ctx)
    assert client.client_secret is not None
    for secret in (refresh_token, code, client.client_secret, user.password, verifier, *cookies):
        assert secret not in stored

    with ctx.db() as db:
        row = db.get(Client, client.client_id)
        assert row is not None
        assert row.secret_hash == keyed_digest(ctx.secret_key, client.client_secret)
        assert row.secret_hash != hashlib.sha256(client.client_secret.encode()).hexdigest()
        # The refresh token is findable by its digest: it is stored, only hashed.
        assert db.get(RefreshToken, hashlib.sha256(refresh_token.encode()).hexdigest()) is not None


def test_a_busy_sqlite_server_reuses_its_connections(tmp_path):
    """Fifteen requests at once, twice: the second burst opens no connection (the default pool kept
    five and reopened ten every time, four PRAGMAs each)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'pool.db'}")
    opened = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    try:
        for _ in range(2):
            connections = [engine.connect() for _ in range(15)]
            for connection in connections:
                connection.close()
        assert len(opened) == 15
    finally:
        engine.dispose()
