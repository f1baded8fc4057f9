"""The verifier's persistent store (SQLAlchemy 2 + Alembic, SQLite or PostgreSQL)."""

from verifier.store.records import (
    AttestationRecord,
    ClockState,
    EnrollmentState,
    HostEvent,
    HostRecord,
    HostStatus,
    PendingEnrollment,
    ReferenceSet,
)
from verifier.store.store import (
    EnrollmentNotFound,
    HostAlreadyRegistered,
    HostNotFound,
    Store,
    StoreError,
)

__all__ = [
    "AttestationRecord",
    "ClockState",
    "EnrollmentNotFound",
    "EnrollmentState",
    "HostAlreadyRegistered",
    "HostEvent",
    "HostNotFound",
    "HostRecord",
    "HostStatus",
    "PendingEnrollment",
    "ReferenceSet",
    "Store",
    "StoreError",
]
