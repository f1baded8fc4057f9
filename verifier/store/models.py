"""ORM tables of the verifier store (SQLAlchemy 2 typed mappings).

The schema itself is owned by the Alembic migrations in ``migrations/``; these
classes must describe the same tables (a test compares them on both backends).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from verifier.store.base import NAMING_CONVENTION, Base, UInt64, UTCDateTime, one_of
from verifier.store.models_audit import AuditHead, AuditRecordRow
from verifier.store.models_proposals import ProposalDecisionRow, ProposalRow
from verifier.store.models_releases import (
    BindingKey,
    ModelDataKey,
    ModelVersion,
    Release,
    ReleaseDenial,
    Review,
    Site,
)
from verifier.store.models_trust import (
    BootReferenceRow,
    BreakGlassGrantRow,
    GpuPolicyRow,
    ImaPolicyRow,
    ImaProgressRow,
    SnpPolicyRow,
    TdxPolicyRow,
    TrustAnchorRow,
)
from verifier.store.records import (
    AttestationRecord,
    ClockState,
    EnrollmentState,
    HostRecord,
    HostStatus,
    PendingEnrollment,
)
from verifier.verdict import Reason, Tier, Verdict

# Every table, so that ``Base.metadata`` imported from here describes the whole schema.
__all__ = [
    "NAMING_CONVENTION",
    "AttestationResult",
    "AuditHead",
    "AuditRecordRow",
    "Base",
    "BindingKey",
    "BootReferenceRow",
    "BreakGlassGrantRow",
    "Enrollment",
    "GpuPolicyRow",
    "Host",
    "HostEventRow",
    "ImaPolicyRow",
    "ImaProgressRow",
    "ModelDataKey",
    "ModelVersion",
    "ProposalDecisionRow",
    "ProposalRow",
    "ReferenceSetRow",
    "ReferenceValue",
    "Release",
    "ReleaseDenial",
    "Review",
    "Site",
    "SnpPolicyRow",
    "TdxPolicyRow",
    "TrustAnchorRow",
    "UInt64",
    "UTCDateTime",
]

_CLOCK_ALL_OR_NONE = (
    "(last_clock IS NULL AND last_reset_count IS NULL AND last_restart_count IS NULL)"
    " OR (last_clock IS NOT NULL AND last_reset_count IS NOT NULL"
    " AND last_restart_count IS NOT NULL)"
)


class Host(Base):
    __tablename__ = "hosts"
    __table_args__ = (
        CheckConstraint(one_of("status", (s.value for s in HostStatus)), name="status"),
        CheckConstraint(_CLOCK_ALL_OR_NONE, name="clock"),
    )

    host_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    group: Mapped[str] = mapped_column("group", String(255))
    status: Mapped[str] = mapped_column(String(16))
    ek_public: Mapped[bytes | None]
    ek_certificate: Mapped[bytes | None]
    ak_public: Mapped[bytes | None]
    ak_name: Mapped[bytes | None]
    registered_at: Mapped[datetime]
    enrolled_at: Mapped[datetime | None]
    last_attestation_at: Mapped[datetime | None]
    # The three clock columns are all NULL or all set: NULL means "no
    # authenticated quote since enrollment", so no rollback baseline yet.
    last_clock: Mapped[int | None] = mapped_column(UInt64())
    last_reset_count: Mapped[int | None] = mapped_column(BigInteger)
    last_restart_count: Mapped[int | None] = mapped_column(BigInteger)
    # Denormalised from the newest attestation result so that list_hosts is one
    # query; written in the same transaction as that result.
    last_reasons: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    site: Mapped[str | None] = mapped_column(ForeignKey("sites.site_id"))

    def to_record(self) -> HostRecord:
        clock = None
        if self.last_clock is not None:
            # ck_hosts_clock keeps the three columns all set or all NULL.
            assert self.last_reset_count is not None
            assert self.last_restart_count is not None
            clock = ClockState(self.last_clock, self.last_reset_count, self.last_restart_count)
        return HostRecord(
            host_id=self.host_id,
            group=self.group,
            status=HostStatus(self.status),
            ek_public=self.ek_public,
            ek_certificate=self.ek_certificate,
            ak_public=self.ak_public,
            ak_name=self.ak_name,
            registered_at=self.registered_at,
            enrolled_at=self.enrolled_at,
            last_attestation_at=self.last_attestation_at,
            last_clock=clock,
            last_reasons=tuple(Reason(r["code"], r["detail"]) for r in self.last_reasons),
            site=self.site,
        )


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (
        CheckConstraint(one_of("state", (s.value for s in EnrollmentState)), name="state"),
        Index("ix_enrollments_host_id_state", "host_id", "state"),
    )

    enrollment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.host_id"))
    ek_public: Mapped[bytes]
    ek_certificate: Mapped[bytes]
    ak_public: Mapped[bytes]
    ak_name: Mapped[bytes]
    # SHA-256 of the credential secret: enough to check the host's answer, and
    # a database leak does not hand out answers.
    secret_digest: Mapped[bytes]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))

    def to_record(self) -> PendingEnrollment:
        return PendingEnrollment(
            enrollment_id=self.enrollment_id,
            host_id=self.host_id,
            ek_public=self.ek_public,
            ek_certificate=self.ek_certificate,
            ak_public=self.ak_public,
            ak_name=self.ak_name,
            secret_digest=self.secret_digest,
            expires_at=self.expires_at,
            state=self.state,
        )


class ReferenceSetRow(Base):
    __tablename__ = "reference_sets"

    group: Mapped[str] = mapped_column("group", String(255), primary_key=True)
    updated_at: Mapped[datetime]


class ReferenceValue(Base):
    __tablename__ = "reference_values"
    __table_args__ = (UniqueConstraint("group", "bank", "pcr"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    group: Mapped[str] = mapped_column("group", ForeignKey("reference_sets.group"))
    bank: Mapped[str] = mapped_column(String(16))
    pcr: Mapped[int] = mapped_column(Integer)
    value: Mapped[bytes]


class AttestationResult(Base):
    """One appraisal; rows are history and are only ever inserted."""

    __tablename__ = "attestation_results"
    __table_args__ = (
        Index("ix_attestation_results_host_id_appraised_at", "host_id", "appraised_at"),
    )

    result_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.host_id"))
    challenge_id: Mapped[str] = mapped_column(String(255))
    appraised_at: Mapped[datetime]
    tier: Mapped[str] = mapped_column(String(32))
    reasons: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    checks_run: Mapped[list[str]] = mapped_column(JSON)

    def to_record(self) -> AttestationRecord:
        verdict = Verdict(
            Tier(self.tier),
            tuple(Reason(x["code"], x["detail"]) for x in self.reasons),
            frozenset(self.checks_run),
        )
        return AttestationRecord(
            self.result_id, self.host_id, self.challenge_id, self.appraised_at, verdict
        )


class HostEventRow(Base):
    __tablename__ = "host_events"
    __table_args__ = (Index("ix_host_events_host_id_at", "host_id", "at"),)

    # The id orders events that share a timestamp; SQLite only autoincrements
    # an INTEGER primary key, PostgreSQL gets a 64-bit one.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.host_id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
