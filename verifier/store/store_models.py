"""The store's model versions, sites, pre-deployment reviews and binding keys."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from verifier.store._core import (
    StoreCore,
    add_event,
    check_digest,
    check_id,
    lock_host,
    require_aware,
)
from verifier.store.changes import (
    assign_site,
    effective_review_in,
    insert_review,
    upsert_site,
)
from verifier.store.errors import ModelVersionExists
from verifier.store.models_releases import BindingKey, ModelDataKey, ModelVersion, Review, Site
from verifier.store.records import (
    BindingKeyRecord,
    HostRecord,
    ModelVersionRecord,
    ReviewRecord,
    SiteRecord,
    validated_selection,
)
from weightgate.checkpoint.format import FILE_ID_SIZE

_FILE_ID = re.compile(f"[0-9a-f]{{{2 * FILE_ID_SIZE}}}")
_INT32_MAX = 2**31 - 1  # file_count is an INTEGER column
_INT64_MAX = 2**63 - 1  # plaintext_bytes is a BIGINT column


class ModelsMixin(StoreCore):
    # -- model versions --------------------------------------------------------

    def add_model_version(
        self,
        *,
        manifest: bytes,
        manifest_signature: bytes,
        manifest_digest: bytes,
        name: str,
        version: str,
        risk_tier: str,
        file_count: int,
        plaintext_bytes: int,
        wrapped_data_keys: Mapping[str, bytes],
        now: datetime,
    ) -> ModelVersionRecord:
        """Register a checkpoint and its wrapped data keys (one per file, by hex file id).

        The caller has verified the signature and parsed the manifest; this
        checks that the pieces fit together: the digest is the manifest's
        SHA-256 and there is exactly one non-empty key per file. Raises
        ModelVersionExists if the digest, or the name and version, is taken.
        """
        check_digest("manifest_digest", manifest_digest)
        if not manifest or hashlib.sha256(manifest).digest() != manifest_digest:
            raise ValueError("manifest_digest is not the SHA-256 of the manifest")
        if not manifest_signature:
            raise ValueError("manifest_signature must not be empty")
        for field, value in (("name", name), ("version", version), ("risk_tier", risk_tier)):
            check_id(field, value)
        if not 0 < file_count <= _INT32_MAX:
            raise ValueError(f"file_count out of range: {file_count}")
        if not 0 <= plaintext_bytes <= _INT64_MAX:
            raise ValueError(f"plaintext_bytes out of range: {plaintext_bytes}")
        if len(wrapped_data_keys) != file_count:
            raise ValueError(f"{len(wrapped_data_keys)} data keys for {file_count} files")
        for file_id, wrapped in wrapped_data_keys.items():
            if not _FILE_ID.fullmatch(file_id):
                raise ValueError(f"file id must be {FILE_ID_SIZE} bytes in lowercase hex")
            if not isinstance(wrapped, bytes) or not wrapped:
                raise ValueError(f"empty wrapped data key for file {file_id}")
        require_aware("now", now)
        row = ModelVersion(
            manifest_digest=manifest_digest,
            name=name,
            version=version,
            risk_tier=risk_tier,
            manifest=manifest,
            manifest_signature=manifest_signature,
            file_count=file_count,
            plaintext_bytes=plaintext_bytes,
            added_at=now.astimezone(UTC),
        )
        try:
            with self._writing() as s:
                if s.get(ModelVersion, manifest_digest) is not None:
                    raise ModelVersionExists(f"manifest {manifest_digest.hex()}")
                taken = select(ModelVersion.manifest_digest).where(
                    ModelVersion.name == name, ModelVersion.version == version
                )
                if s.scalar(taken) is not None:
                    raise ModelVersionExists(f"{name}:{version}")
                s.add(row)
                # A concurrent insert on PostgreSQL surfaces here.
                s.flush()
                s.add_all(
                    ModelDataKey(manifest_digest=manifest_digest, file_id=f, wrapped_key=k)
                    for f, k in wrapped_data_keys.items()
                )
        except IntegrityError as exc:
            raise ModelVersionExists(f"{name}:{version} ({manifest_digest.hex()})") from exc
        return row.to_record()

    def get_model_version(self, manifest_digest: bytes) -> ModelVersionRecord | None:
        with self._reader() as s:
            row = s.get(ModelVersion, manifest_digest)
            return None if row is None else row.to_record()

    def list_model_versions(self) -> list[ModelVersionRecord]:
        query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)
        with self._reader() as s:
            return [m.to_record() for m in s.scalars(query)]

    def wrapped_data_keys(self, manifest_digest: bytes) -> dict[str, bytes]:
        """File id (hex) -> wrapped data key; empty for an unknown model version."""
        query = (
            select(ModelDataKey)
            .where(ModelDataKey.manifest_digest == manifest_digest)
            .order_by(ModelDataKey.file_id)
        )
        with self._reader() as s:
            return {k.file_id: k.wrapped_key for k in s.scalars(query)}

    # -- sites -----------------------------------------------------------------

    def set_site(
        self, site_id: str, *, cleared_risk_tiers: Iterable[str], description: str, now: datetime
    ) -> SiteRecord:
        """Create or replace a site directly (setup and tests; operators propose it)."""
        with self._writing() as s:
            return upsert_site(
                s, site_id, cleared_risk_tiers=cleared_risk_tiers, description=description, now=now
            )

    def get_site(self, site_id: str) -> SiteRecord | None:
        with self._reader() as s:
            row = s.get(Site, site_id)
            return None if row is None else row.to_record()

    def list_sites(self) -> list[SiteRecord]:
        with self._reader() as s:
            return [r.to_record() for r in s.scalars(select(Site).order_by(Site.site_id))]

    def assign_host_to_site(self, host_id: str, site_id: str, *, now: datetime) -> HostRecord:
        """Assign directly (setup and tests; operators propose it)."""
        with self._writing() as s:
            return assign_site(s, host_id, site_id, now=now)

    # -- reviews ---------------------------------------------------------------

    def record_review(
        self,
        *,
        manifest_digest: bytes,
        site_id: str,
        reviewer: str,
        summary: str,
        now: datetime,
        expires_at: datetime,
        required_controls: Sequence[str] = (),
    ) -> ReviewRecord:
        """Record a review directly (setup and tests; operators propose it)."""
        with self._writing() as s:
            return insert_review(
                s,
                manifest_digest=manifest_digest,
                site_id=site_id,
                reviewer=reviewer,
                summary=summary,
                now=now,
                expires_at=expires_at,
                required_controls=required_controls,
            )

    def effective_review(
        self, manifest_digest: bytes, site_id: str, *, now: datetime
    ) -> ReviewRecord | None:
        """The review of the model version for the site in force at ``now``, if any."""
        with self._reader() as s:
            return effective_review_in(s, manifest_digest, site_id, now=now)

    def list_reviews(
        self,
        *,
        manifest_digest: bytes | None = None,
        site_id: str | None = None,
        effective_at: datetime | None = None,
        limit: int = 200,
    ) -> list[ReviewRecord]:
        """Reviews, newest first, optionally of one model version, one site, or in
        force at ``effective_at``."""
        query = select(Review)
        if manifest_digest is not None:
            query = query.where(Review.manifest_digest == manifest_digest)
        if site_id is not None:
            query = query.where(Review.site_id == site_id)
        if effective_at is not None:
            require_aware("effective_at", effective_at)
            query = query.where(Review.recorded_at <= effective_at)
            query = query.where(Review.expires_at > effective_at)
        query = query.order_by(Review.recorded_at.desc(), Review.review_id).limit(limit)
        with self._reader() as s:
            return [r.to_record() for r in s.scalars(query)]

    # -- binding keys ----------------------------------------------------------

    def set_binding_key(
        self,
        host_id: str,
        *,
        public: bytes,
        policy_digest: bytes,
        pcr_selection: Mapping[str, Sequence[int]],
        now: datetime,
    ) -> BindingKeyRecord:
        """Store the host's newly certified binding key, replacing any earlier one."""
        if not public:
            raise ValueError("public must not be empty")
        if not policy_digest:
            raise ValueError("policy_digest must not be empty")
        selection = validated_selection(pcr_selection)
        require_aware("now", now)
        with self._writing() as s:
            lock_host(s, host_id)
            row = s.get(BindingKey, host_id)
            if row is None:
                row = BindingKey(host_id=host_id)
                s.add(row)
            row.public = public
            row.policy_digest = policy_digest
            row.pcr_selection = selection
            row.certified_at = now.astimezone(UTC)
            add_event(s, host_id, now, "binding_key_certified", f"policy {policy_digest.hex()}")
        return row.to_record()

    def get_binding_key(self, host_id: str) -> BindingKeyRecord | None:
        with self._reader() as s:
            row = s.get(BindingKey, host_id)
            return None if row is None else row.to_record()
