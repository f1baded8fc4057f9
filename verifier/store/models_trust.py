"""ORM tables that approved proposals fill (created by migration 0006).

``trust_anchors``: CA certificates trusted for a purpose beside the config
file's; ``break_glass_grants``: insert-only, time-limited waivers;
``boot_references`` (migration 0007): each host group's measured-boot reference;
``ima_policies`` and ``ima_progress`` (0008): each group's IMA runtime policy,
and how far each host's IMA list has been appraised in its current boot;
``gpu_policies`` (0009): each group's NVIDIA GPU policy; ``snp_policies`` (0010):
each group's AMD SEV-SNP policy; ``tdx_policies`` (0011): each group's Intel TDX policy.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from verifier.store.base import Base
from verifier.store.records_proposals import (
    BreakGlassRecord,
    GroupDocumentRecord,
    ImaProgress,
    TrustAnchorRecord,
)


class TrustAnchorRow(Base):
    __tablename__ = "trust_anchors"

    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(primary_key=True)
    certificate_der: Mapped[bytes]
    subject: Mapped[str] = mapped_column(Text)
    not_after: Mapped[datetime]
    added_at: Mapped[datetime]
    proposal_id: Mapped[str] = mapped_column(String(32))

    def to_record(self) -> TrustAnchorRecord:
        return TrustAnchorRecord(
            purpose=self.purpose,
            fingerprint=self.fingerprint,
            certificate_der=self.certificate_der,
            subject=self.subject,
            not_after=self.not_after,
            added_at=self.added_at,
            proposal_id=self.proposal_id,
        )


class BreakGlassGrantRow(Base):
    __tablename__ = "break_glass_grants"
    __table_args__ = (
        CheckConstraint("expires_at > granted_at", name="expiry"),
        Index("ix_break_glass_grants_host_id_manifest_digest", "host_id", "manifest_digest"),
    )

    grant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.host_id"))
    manifest_digest: Mapped[bytes] = mapped_column(ForeignKey("model_versions.manifest_digest"))
    granted_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    proposal_id: Mapped[str] = mapped_column(String(32))
    approvers: Mapped[list[str]] = mapped_column(JSON)

    def to_record(self) -> BreakGlassRecord:
        return BreakGlassRecord(
            grant_id=self.grant_id,
            host_id=self.host_id,
            manifest_digest=self.manifest_digest,
            granted_at=self.granted_at,
            expires_at=self.expires_at,
            proposal_id=self.proposal_id,
            approvers=tuple(self.approvers),
        )


class GroupDocumentRow(Base):
    """One host group's document of one kind: every kind's table has these columns."""

    __abstract__ = True

    group: Mapped[str] = mapped_column(String(255), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]
    proposal_id: Mapped[str] = mapped_column(String(32))

    def to_record(self) -> GroupDocumentRecord:
        return GroupDocumentRecord(
            self.group, copy.deepcopy(self.document), self.updated_at, self.proposal_id
        )


class BootReferenceRow(GroupDocumentRow):
    __tablename__ = "boot_references"


class ImaPolicyRow(GroupDocumentRow):
    __tablename__ = "ima_policies"


class GpuPolicyRow(GroupDocumentRow):
    __tablename__ = "gpu_policies"


class SnpPolicyRow(GroupDocumentRow):
    __tablename__ = "snp_policies"


class TdxPolicyRow(GroupDocumentRow):
    __tablename__ = "tdx_policies"


class ImaProgressRow(Base):
    __tablename__ = "ima_progress"
    __table_args__ = (CheckConstraint("entry_count >= 0", name="entry_count"),)

    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.host_id"), primary_key=True)
    reset_count: Mapped[int] = mapped_column(BigInteger)
    entry_count: Mapped[int] = mapped_column(BigInteger)
    pcrs: Mapped[dict[str, str]] = mapped_column(JSON)
    updated_at: Mapped[datetime]

    def to_record(self) -> ImaProgress:
        return ImaProgress(
            self.host_id, self.reset_count, self.entry_count, dict(self.pcrs), self.updated_at
        )
