"""Reads of what approved proposals put in place: trust anchors, break-glass grants,
measured-boot references, IMA, GPU, SEV-SNP and TDX policies."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select

from verifier.store._core import StoreCore, require_aware
from verifier.store.document_kinds import (
    BOOT_REFERENCE,
    DOCUMENT_KINDS,
    GPU_POLICY,
    IMA_POLICY,
    SNP_POLICY,
    TDX_POLICY,
)
from verifier.store.models_trust import BreakGlassGrantRow, ImaProgressRow, TrustAnchorRow
from verifier.store.records_proposals import (
    BootReferenceRecord,
    BreakGlassRecord,
    GpuPolicyRecord,
    GroupDocumentRecord,
    ImaPolicyRecord,
    ImaProgress,
    SnpPolicyRecord,
    TdxPolicyRecord,
    TrustAnchorRecord,
)


class TrustMixin(StoreCore):
    def trust_anchors(self, purpose: str | None = None) -> list[TrustAnchorRecord]:
        """Anchors added by approved proposals, optionally for one purpose."""
        query = select(TrustAnchorRow).order_by(TrustAnchorRow.purpose, TrustAnchorRow.added_at)
        if purpose is not None:
            query = query.where(TrustAnchorRow.purpose == purpose)
        with self._reader() as s:
            return [r.to_record() for r in s.scalars(query)]

    def active_break_glass(
        self, host_id: str, manifest_digest: bytes, *, now: datetime
    ) -> BreakGlassRecord | None:
        """The grant for this host and model version in force at ``now``, if any
        (the one lasting longest when several are)."""
        require_aware("now", now)
        query = (
            select(BreakGlassGrantRow)
            .where(BreakGlassGrantRow.host_id == host_id)
            .where(BreakGlassGrantRow.manifest_digest == manifest_digest)
            .where(BreakGlassGrantRow.granted_at <= now)
            .where(BreakGlassGrantRow.expires_at > now)
            .order_by(BreakGlassGrantRow.expires_at.desc())
            .limit(1)
        )
        with self._reader() as s:
            row = s.scalar(query)
            return None if row is None else row.to_record()

    def group_document(self, kind: str, group: str) -> GroupDocumentRecord | None:
        """The group's document of ``kind`` (verifier.group_document_kinds) in force."""
        with self._reader() as s:
            row = s.get(DOCUMENT_KINDS[kind].table, group)
            return None if row is None else row.to_record()

    def get_boot_reference(self, group: str) -> BootReferenceRecord | None:
        return self.group_document(BOOT_REFERENCE, group)

    def get_ima_policy(self, group: str) -> ImaPolicyRecord | None:
        return self.group_document(IMA_POLICY, group)

    def get_gpu_policy(self, group: str) -> GpuPolicyRecord | None:
        return self.group_document(GPU_POLICY, group)

    def get_snp_policy(self, group: str) -> SnpPolicyRecord | None:
        return self.group_document(SNP_POLICY, group)

    def get_tdx_policy(self, group: str) -> TdxPolicyRecord | None:
        return self.group_document(TDX_POLICY, group)

    def ima_progress(self, host_id: str) -> ImaProgress | None:
        with self._reader() as s:
            row = s.get(ImaProgressRow, host_id)
            return None if row is None else row.to_record()

    def save_ima_progress(
        self,
        host_id: str,
        *,
        reset_count: int,
        entry_count: int,
        pcrs: Mapping[str, bytes],
        now: datetime,
    ) -> ImaProgress:
        """Record that the host's list is appraised up to ``entry_count`` in this boot.

        Only ever moves forward within one boot (``reset_count``): a lower count
        for the same boot is refused, so a replayed old answer cannot rewind it.
        """
        require_aware("now", now)
        if entry_count < 0 or reset_count < 0:
            raise ValueError("counts must not be negative")
        values = {
            "reset_count": reset_count,
            "entry_count": entry_count,
            "pcrs": {bank: value.hex() for bank, value in sorted(pcrs.items())},
            "updated_at": now,
        }
        with self._writing() as s:
            row = s.get(ImaProgressRow, host_id, with_for_update=True)
            if row is None:
                row = ImaProgressRow(host_id=host_id, **values)
                s.add(row)
            else:
                if row.reset_count == reset_count and entry_count < row.entry_count:
                    raise ValueError(
                        f"IMA progress of {host_id} would go back from {row.entry_count} "
                        f"to {entry_count} in the same boot"
                    )
                for name, value in values.items():
                    setattr(row, name, value)
            s.flush()
            return row.to_record()
