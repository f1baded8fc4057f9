"""Alembic migrations of the verifier store, run by ``Store.open`` (no alembic.ini)."""
