"""ORM tables that approved proposals fill (created by migration 0006).

``trust_anchors``: CA certificates trusted for a purpose beside the config
file's; ``break_glass_grants``: insert-only, time-limited waivers;
``boot_references`` (migration 0007): each host group's measured-boot reference.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from verifier.store.base import Base
from verifier.store.records_proposals import (
    BootReferenceRecord,
    BreakGlassRecord,
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


class BootReferenceRow(Base):
    __tablename__ = "boot_references"

    group: Mapped[str] = mapped_column(String(255), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]
    proposal_id: Mapped[str] = mapped_column(String(32))

    def to_record(self) -> BootReferenceRecord:
        return BootReferenceRecord(
            self.group, copy.deepcopy(self.document), self.updated_at, self.proposal_id
        )
