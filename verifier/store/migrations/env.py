"""Alembic environment: runs only on a connection handed over by ``Store.open``.

There is no alembic.ini and no URL here on purpose: the store owns the engine
(its SQLite pragmas, PostgreSQL search_path and transaction handling), so
migrations run inside the very transaction the store opened for them.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from verifier.store.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through verifier.store.Store.open, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode lets future migrations
    # rebuild tables the same way on both backends.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
