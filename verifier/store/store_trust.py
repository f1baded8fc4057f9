"""Reads of what approved proposals put in place: trust anchors, break-glass grants,
measured-boot references."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from verifier.store._core import StoreCore, require_aware
from verifier.store.models_trust import BootReferenceRow, BreakGlassGrantRow, TrustAnchorRow
from verifier.store.records_proposals import (
    BootReferenceRecord,
    BreakGlassRecord,
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
