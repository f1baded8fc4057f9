"""What every part of the store shares: engine and sessions, input checks, events."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import ModuleType
from typing import Self

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from verifier.store.errors import HostNotFound
from verifier.store.migrations import WRITE_OPTION, open_engine
from verifier.store.models import Host, HostEventRow

SHA256_SIZE = 32
MAX_ID_LENGTH = 255  # the width of the id columns


class StoreCore:
    """Engine, sessions and lifetime; the store's parts extend it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # expire_on_commit=False: records are built after commit from the loaded rows.
        self._reader = sessionmaker(engine, expire_on_commit=False)
        self._writer = sessionmaker(
            engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )

    @classmethod
    def open(cls, url: str, *, schema: str | None = None) -> Self:
        """Connect, migrate to the newest schema, and return the store.

        ``schema`` (PostgreSQL only) puts every table in that schema, creating it
        if needed; tests use it to isolate themselves.
        """
        return cls(open_engine(url, schema=schema))

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with self._writer.begin() as session:  # commits, or rolls back on any exception
            yield session


def dialect_of(s: Session) -> ModuleType:
    """The dialect module whose ``insert`` has ``on_conflict_do_update``."""
    return postgresql if s.get_bind().dialect.name == "postgresql" else sqlite


def lock_host(s: Session, host_id: str) -> Host:
    """The host's row, locked until the transaction ends; HostNotFound if there is none."""
    host = s.get(Host, host_id, with_for_update=True)
    if host is None:
        raise HostNotFound(host_id)
    return host


def add_event(s: Session, host_id: str, at: datetime, kind: str, detail: str) -> None:
    s.add(HostEventRow(host_id=host_id, at=at, kind=kind, detail=detail))


def utcnow() -> datetime:
    return datetime.now(UTC)


def require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def check_id(name: str, value: str) -> None:
    if not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} must be 1 to {MAX_ID_LENGTH} characters")


def check_text(name: str, value: str) -> None:
    if not value:
        raise ValueError(f"{name} must not be empty")


def check_digest(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != SHA256_SIZE:
        raise ValueError(f"{name} must be a {SHA256_SIZE}-byte SHA-256 digest")


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError("limit must be positive")
