"""Reads of what approved proposals put in place: trust anchors, break-glass grants,
measured-boot references, IMA, GPU, SEV-SNP and TDX policies."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select

from verifier.store._core import StoreCore, require_aware
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
from verifier.store.records_proposals import (
    BootReferenceRecord,
    BreakGlassRecord,
    GpuPolicyRecord,
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

    def get_boot_reference(self, group: str) -> BootReferenceRecord | None:
        with self._reader() as s:
            row = s.get(BootReferenceRow, group)
            return None if row is None else row.to_record()

    def get_ima_policy(self, group: str) -> ImaPolicyRecord | None:
        with self._reader() as s:
            row = s.get(ImaPolicyRow, group)
            return None if row is None else row.to_record()

    def get_gpu_policy(self, group: str) -> GpuPolicyRecord | None:
        with self._reader() as s:
            row = s.get(GpuPolicyRow, group)
            return None if row is None else row.to_record()

    def get_snp_policy(self, group: str) -> SnpPolicyRecord | None:
        with self._reader() as s:
            row = s.get(SnpPolicyRow, group)
            return None if row is None else row.to_record()

    def get_tdx_policy(self, group: str) -> TdxPolicyRecord | None:
        with self._reader() as s:
            row = s.get(TdxPolicyRow, group)
            return None if row is None else row.to_record()

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
