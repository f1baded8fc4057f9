"""Engines for the store, brought to the newest schema by Alembic.

Alembic runs from this package with a Config built in code (no alembic.ini):
``open_engine`` creates the engine with the per-backend settings the store
relies on, then upgrades it to ``head`` on one of its own connections.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url

# Execution option marking write transactions, which SQLite must start with
# BEGIN IMMEDIATE: a deferred transaction that reads and then writes fails at
# once with SQLITE_BUSY when another writer got in between, instead of waiting.
WRITE_OPTION = "weightgate_write"
_SCRIPT_LOCATION = Path(__file__).parent
# Serialises concurrent upgrades of one PostgreSQL database, so two verifier
# processes starting together do not both run the same migration.
_MIGRATION_LOCK_KEY = 0x7765696768747761
# Unquoted PostgreSQL identifier: it ends up in a libpq options string.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SQLITE_BUSY_TIMEOUT_MS = 15_000  # far longer than any of our transactions takes


def open_engine(url: str, *, schema: str | None = None) -> Engine:
    """An engine for ``url`` whose database is at the newest schema.

    SQLite: creates the file's parent directory, enables foreign keys and WAL.
    PostgreSQL: ``schema`` (created if missing) becomes the search_path.
    """
    engine = _create_engine(url, schema)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` in one transaction; a no-op when already there."""
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """``alembic downgrade <revision>`` in one transaction (for operators and tests)."""
    _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, run: Callable[[Config, str], None], revision: str) -> None:
    """Run one Alembic command in one transaction, under the migration lock.

    On SQLite, foreign key enforcement is off while migrating: rebuilding a
    table that others reference (batch mode's copy, drop, rename) would
    otherwise fail or cascade. It can only be switched outside a transaction,
    so it is switched around it, and every key is checked before the commit.
    """
    config = Config()
    config.set_main_option("script_location", str(_SCRIPT_LOCATION))
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            _sqlite_pragma(conn, "PRAGMA foreign_keys=OFF")
        try:
            with conn.execution_options(**{WRITE_OPTION: True}).begin():
                if conn.dialect.name == "postgresql":
                    _lock_migrations(conn)
                config.attributes["connection"] = conn
                run(config, revision)
                if sqlite:
                    _check_foreign_keys(conn)
        finally:
            if sqlite:
                _sqlite_pragma(conn, "PRAGMA foreign_keys=ON")


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    """Run ``pragma`` on the driver connection, outside any transaction."""
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute(pragma)


def _check_foreign_keys(conn: Connection) -> None:
    violations = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if violations:
        raise RuntimeError(f"migration left dangling foreign keys: {violations[:5]}")


def _lock_migrations(conn: Connection) -> None:
    """Hold a database-wide lock until ``conn``'s transaction ends (PostgreSQL)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})


def _create_engine(url: str, schema: str | None) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if schema is not None:
            raise ValueError("schema is only supported on PostgreSQL")
        database = parsed.database
        # Every pooled connection would get its own empty in-memory database.
        if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
            raise ValueError("the store needs a SQLite file, not an in-memory database")
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        connect_args: dict[str, Any] = {}
        if schema is not None:
            if not _SCHEMA_NAME.fullmatch(schema):
                raise ValueError(f"invalid schema name: {schema!r}")
            connect_args["options"] = f"-csearch_path={schema}"
        # pre_ping: a restarted database server must not fail the next request.
        engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
        if schema is not None:
            with engine.begin() as conn:
                # IF NOT EXISTS still races with a concurrent creator; the lock does not.
                _lock_migrations(conn)
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        return engine
    raise ValueError(f"unsupported database backend: {backend}")


def _sqlite_on_connect(dbapi_connection: Any, _record: object) -> None:
    # Take transaction control away from the sqlite3 module (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # First, so that switching to WAL below waits for a concurrent opener.
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")  # off by default, and per connection
        # WAL: readers never block the writer nor the reverse. synchronous stays
        # FULL (the default) so a committed enrollment survives a power cut.
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    writing = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")
