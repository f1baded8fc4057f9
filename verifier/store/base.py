"""Shared ORM foundations: the declarative base, naming convention and column types."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, LargeBinary, MetaData, TypeDecorator
from sqlalchemy.orm import DeclarativeBase

# Deterministic constraint names, so later migrations can refer to them on
# both backends (SQLite would otherwise leave them unnamed).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_SIGNED_OFFSET = 2**64


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no time zones: SQLAlchemy stores a naive ISO string and reads a
    naive datetime back. Normalising to UTC before binding keeps the stored
    strings in chronological lexical order (so ``expires_at > :now`` compares
    correctly in SQL), and reattaching UTC on the way out keeps the API aware.
    Naive input is refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: the store only accepts timezone-aware values")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class UInt64(TypeDecorator[int]):
    """An unsigned 64-bit integer kept exactly in a signed BIGINT.

    The TPM clock is a UINT64 that an owner can set close to 2**64
    (TPM2_ClockSet), and neither backend has an unsigned 64-bit column: SQLite
    would silently turn such a value into a lossy REAL. Storing the two's
    complement bit pattern is exact; the column is never compared in SQL.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if not 0 <= value < _SIGNED_OFFSET:
            raise ValueError(f"not a UINT64: {value}")
        return value - _SIGNED_OFFSET if value >= 2**63 else value

    def process_result_value(self, value: int | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return value + _SIGNED_OFFSET if value < 0 else value


def one_of(column: str, values: Iterable[str]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {  # noqa: RUF012 - SQLAlchemy's documented hook
        datetime: UTCDateTime(),
        bytes: LargeBinary(),
    }
