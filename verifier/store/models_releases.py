"""ORM tables for model versions, sites, reviews, binding keys and key releases.

Created by migration 0002; like ``models``, these must describe exactly the
tables the migrations create.
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
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from verifier.store.base import Base, one_of
from verifier.store.records import (
    BindingKeyRecord,
    ModelVersionRecord,
    ReleaseDenialRecord,
    ReleaseRecord,
    ReleaseState,
    ReviewRecord,
    SiteRecord,
)
from verifier.verdict import Reason

# Which timestamps each release state carries; the store's transitions keep to
# it and the database refuses anything else.
RELEASE_TIMESTAMPS = (
    "(state = 'released' AND revoked_at IS NULL AND erased_at IS NULL)"
    " OR (state IN ('revoked', 'expired') AND revoked_at IS NOT NULL AND erased_at IS NULL)"
    " OR (state = 'erased' AND revoked_at IS NOT NULL AND erased_at IS NOT NULL)"
)


class ModelVersion(Base):
    """A registered checkpoint; rows are never changed once written."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        CheckConstraint("file_count > 0", name="file_count"),
        CheckConstraint("plaintext_bytes >= 0", name="plaintext_bytes"),
    )

    manifest_digest: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(255))
    risk_tier: Mapped[str] = mapped_column(String(255))
    manifest: Mapped[bytes]
    manifest_signature: Mapped[bytes]
    file_count: Mapped[int] = mapped_column(Integer)
    plaintext_bytes: Mapped[int] = mapped_column(BigInteger)
    added_at: Mapped[datetime]

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    def to_record(self) -> ModelVersionRecord:
        return ModelVersionRecord(
            manifest_digest=self.manifest_digest,
            name=self.name,
            version=self.version,
            risk_tier=self.risk_tier,
            manifest=self.manifest,
            manifest_signature=self.manifest_signature,
            file_count=self.file_count,
            plaintext_bytes=self.plaintext_bytes,
            added_at=self.added_at,
        )


class ModelDataKey(Base):
    """One file's data key, wrapped by the verifier's key store."""

    __tablename__ = "model_data_keys"

    manifest_digest: Mapped[bytes] = mapped_column(
        ForeignKey("model_versions.manifest_digest"), primary_key=True
    )
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # lowercase hex
    wrapped_key: Mapped[bytes]


class Site(Base):
    __tablename__ = "sites"

    site_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    cleared_risk_tiers: Mapped[list[str]] = mapped_column(JSON)  # sorted, unique
    description: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]

    def to_record(self) -> SiteRecord:
        return SiteRecord(
            self.site_id, frozenset(self.cleared_risk_tiers), self.description, self.updated_at
        )


class Review(Base):
    """A pre-deployment review; rows are history and are only ever inserted."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("expires_at > recorded_at", name="expiry"),
        Index(
            "ix_reviews_manifest_digest_site_id_expires_at",
            "manifest_digest",
            "site_id",
            "expires_at",
        ),
    )

    review_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    manifest_digest: Mapped[bytes] = mapped_column(ForeignKey("model_versions.manifest_digest"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.site_id"))
    risk_tier: Mapped[str] = mapped_column(String(255))
    reviewer: Mapped[str] = mapped_column(String(255))
    summary: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # Added by migration 0005 (the two-person rule): the risk evaluation and who
    # approved it. Lists are kept sorted and unique.
    categories_assessed: Mapped[list[str]] = mapped_column(JSON, default=list)
    required_controls: Mapped[list[str]] = mapped_column(JSON, default=list)
    findings: Mapped[str] = mapped_column(Text, default="")
    approvers: Mapped[list[str]] = mapped_column(JSON, default=list)
    proposal_id: Mapped[str | None] = mapped_column(String(32))

    def to_record(self) -> ReviewRecord:
        return ReviewRecord(
            review_id=self.review_id,
            manifest_digest=self.manifest_digest,
            site_id=self.site_id,
            risk_tier=self.risk_tier,
            reviewer=self.reviewer,
            summary=self.summary,
            recorded_at=self.recorded_at,
            expires_at=self.expires_at,
            categories_assessed=tuple(self.categories_assessed),
            required_controls=tuple(self.required_controls),
            findings=self.findings,
            approvers=tuple(self.approvers),
            proposal_id=self.proposal_id,
        )


class BindingKey(Base):
    """The host's current certified binding key (one per host, replaced on recertification)."""

    __tablename__ = "binding_keys"

    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.host_id"), primary_key=True)
    public: Mapped[bytes]
    policy_digest: Mapped[bytes]
    pcr_selection: Mapped[dict[str, list[int]]] = mapped_column(JSON)
    certified_at: Mapped[datetime]

    def to_record(self) -> BindingKeyRecord:
        selection = {bank: tuple(pcrs) for bank, pcrs in sorted(self.pcr_selection.items())}
        return BindingKeyRecord(
            self.host_id, self.public, self.policy_digest, selection, self.certified_at
        )


class Release(Base):
    __tablename__ = "releases"
    __table_args__ = (
        CheckConstraint(one_of("state", (s.value for s in ReleaseState)), name="state"),
        CheckConstraint(RELEASE_TIMESTAMPS, name="timestamps"),
        Index("ix_releases_host_id_state", "host_id", "state"),
        # The expiry sweep: released leases that ran out.
        Index("ix_releases_state_lease_expires_at", "state", "lease_expires_at"),
        Index("ix_releases_manifest_digest", "manifest_digest"),
    )

    release_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.host_id"))
    manifest_digest: Mapped[bytes] = mapped_column(ForeignKey("model_versions.manifest_digest"))
    # "name:version", copied from the (immutable) model version so listing is one query.
    model: Mapped[str] = mapped_column(String(511))
    state: Mapped[str] = mapped_column(String(16))
    released_at: Mapped[datetime]
    lease_expires_at: Mapped[datetime]
    renewed_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    erased_at: Mapped[datetime | None]
    revocation_reason: Mapped[str] = mapped_column(Text)
    erase_qualifying_data: Mapped[bytes | None]

    def to_record(self) -> ReleaseRecord:
        return ReleaseRecord(
            release_id=self.release_id,
            host_id=self.host_id,
            manifest_digest=self.manifest_digest,
            model=self.model,
            state=ReleaseState(self.state),
            released_at=self.released_at,
            lease_expires_at=self.lease_expires_at,
            renewed_at=self.renewed_at,
            revoked_at=self.revoked_at,
            erased_at=self.erased_at,
            revocation_reason=self.revocation_reason,
            erase_qualifying_data=self.erase_qualifying_data,
        )


class ReleaseDenial(Base):
    """A refused release request; only ever inserted.

    Neither column is a foreign key: a request may name a model version the
    verifier never registered, or come from a host id it does not know, and the
    denial is worth keeping either way.
    """

    __tablename__ = "release_denials"
    __table_args__ = (Index("ix_release_denials_host_id_at", "host_id", "at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    host_id: Mapped[str] = mapped_column(String(255))
    manifest_digest: Mapped[bytes]
    at: Mapped[datetime]
    reasons: Mapped[list[dict[str, str]]] = mapped_column(JSON)

    def to_record(self) -> ReleaseDenialRecord:
        reasons = tuple(Reason(r["code"], r["detail"]) for r in self.reasons)
        return ReleaseDenialRecord(self.host_id, self.manifest_digest, self.at, reasons)
