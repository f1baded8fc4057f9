"""The store's key releases, their leases and erasure, and refused release requests.

A release moves RELEASED -> REVOKED | EXPIRED -> ERASED. The stream handler
(renew, revoke, erase) and the expiry sweeper race for the same rows, so every
transition locks the host first and then the release, re-reading the state
under the lock: PostgreSQL's ``FOR UPDATE`` (one order everywhere, no
deadlock), SQLite's ``BEGIN IMMEDIATE`` (one writer at a time).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from verifier.store._core import (
    StoreCore,
    add_event,
    check_digest,
    check_id,
    check_limit,
    check_text,
    lock_host,
    require_aware,
)
from verifier.store.errors import (
    HostQuarantined,
    ModelVersionNotFound,
    ReleaseNotFound,
    ReleaseStateError,
)
from verifier.store.models import Host
from verifier.store.models_releases import ModelVersion, Release, ReleaseDenial
from verifier.store.records import (
    HostStatus,
    ReleaseDenialRecord,
    ReleaseRecord,
    ReleaseState,
)
from verifier.verdict import Reason

LEASE_EXPIRED = "lease_expired"  # revocation_reason of an expired release
_AWAITING_ERASURE = (ReleaseState.REVOKED.value, ReleaseState.EXPIRED.value)
_OLDEST_FIRST = (Release.released_at, Release.release_id)


class ReleasesMixin(StoreCore):
    def create_release(
        self, *, host_id: str, manifest_digest: bytes, lease_expires_at: datetime, now: datetime
    ) -> ReleaseRecord:
        """Record that the model version's keys were released to the host.

        The caller's gate decides; the store still refuses a quarantined host
        (HostQuarantined), holding the host's lock so a concurrent quarantine
        cannot slip between the gate's check and this write.
        """
        check_digest("manifest_digest", manifest_digest)
        require_aware("now", now)
        require_aware("lease_expires_at", lease_expires_at)
        if lease_expires_at <= now:
            raise ValueError("lease_expires_at must be after now")
        with self._writing() as s:
            host = lock_host(s, host_id)
            if host.status == HostStatus.QUARANTINED.value:
                raise HostQuarantined(host_id)
            model = s.get(ModelVersion, manifest_digest)
            if model is None:
                raise ModelVersionNotFound(manifest_digest.hex())
            row = Release(
                release_id=uuid.uuid4().hex,
                host_id=host_id,
                manifest_digest=manifest_digest,
                model=model.label,
                state=ReleaseState.RELEASED.value,
                released_at=now.astimezone(UTC),
                lease_expires_at=lease_expires_at.astimezone(UTC),
                revocation_reason="",
            )
            s.add(row)
            add_event(s, host_id, now, "key_released", _detail(row))
        return row.to_record()

    def renew_releases(
        self, host_id: str, *, lease_expires_at: datetime, now: datetime
    ) -> list[ReleaseRecord]:
        """Give every live release of the host whose lease still runs at ``now`` the new
        expiry, and return those (oldest first). A lease that already ran out is not
        revived: it is the sweeper's to expire. A quarantined host renews nothing."""
        require_aware("now", now)
        require_aware("lease_expires_at", lease_expires_at)
        if lease_expires_at <= now:
            raise ValueError("lease_expires_at must be after now")
        with self._writing() as s:
            if lock_host(s, host_id).status == HostStatus.QUARANTINED.value:
                return []
            query = (
                select(Release)
                .order_by(*_OLDEST_FIRST)
                .where(Release.host_id == host_id)
                .where(Release.state == ReleaseState.RELEASED.value)
                .where(Release.lease_expires_at > now)
                .with_for_update()
            )
            rows = list(s.scalars(query))
            for row in rows:
                row.lease_expires_at = lease_expires_at.astimezone(UTC)
                row.renewed_at = now.astimezone(UTC)
        return [r.to_record() for r in rows]

    def revoke_release(
        self, release_id: str, *, reason: str, erase_qualifying_data: bytes, now: datetime
    ) -> ReleaseRecord:
        """Withdraw a live release, or re-challenge one that awaits its erase receipt.

        RELEASED becomes REVOKED with ``reason``; REVOKED and EXPIRED keep their
        reason and only take the new ``erase_qualifying_data`` (the receipt must
        answer the newest challenge); ERASED is returned unchanged.
        """
        check_text("reason", reason)
        if not erase_qualifying_data:
            raise ValueError("erase_qualifying_data must not be empty")
        require_aware("now", now)
        with self._writing() as s:
            row = _lock_release(s, release_id)
            if row.state == ReleaseState.RELEASED:
                row.state = ReleaseState.REVOKED.value
                row.revoked_at = now.astimezone(UTC)
                row.revocation_reason = reason
                row.erase_qualifying_data = erase_qualifying_data
                add_event(s, row.host_id, now, "key_revoked", f"{_detail(row)}: {reason}")
            elif row.state in _AWAITING_ERASURE:
                row.erase_qualifying_data = erase_qualifying_data
        return row.to_record()

    def expire_releases(self, *, now: datetime) -> list[ReleaseRecord]:
        """Expire every live release whose lease ran out by ``now``; return them."""
        require_aware("now", now)
        overdue = (
            Release.state == ReleaseState.RELEASED.value,
            Release.lease_expires_at <= now,
        )
        with self._writing() as s:
            candidates = select(Release.host_id).where(*overdue).distinct()
            host_ids = list(s.scalars(candidates.order_by(Release.host_id)))
            if not host_ids:
                return []
            # Hosts first, in one order, as every other transition does; the
            # releases are then re-read under their locks.
            s.scalars(
                select(Host.host_id)
                .where(Host.host_id.in_(host_ids))
                .order_by(Host.host_id)
                .with_for_update()
            ).all()
            query = (
                select(Release)
                .order_by(*_OLDEST_FIRST)
                .where(*overdue, Release.host_id.in_(host_ids))
                .with_for_update()
            )
            rows = list(s.scalars(query))
            for row in rows:
                row.state = ReleaseState.EXPIRED.value
                row.revoked_at = now.astimezone(UTC)
                row.revocation_reason = LEASE_EXPIRED
                add_event(s, row.host_id, now, "lease_expired", _detail(row))
        return [r.to_record() for r in rows]

    def mark_erased(self, release_id: str, *, now: datetime) -> ReleaseRecord:
        """Close a revoked or expired release whose erase receipt verified.

        Raises ReleaseStateError from any other state (a live release was never
        asked to erase; an erased one is closed already).
        """
        require_aware("now", now)
        with self._writing() as s:
            row = _lock_release(s, release_id)
            if row.state not in _AWAITING_ERASURE:
                raise ReleaseStateError(
                    f"release {release_id} is {row.state}, not awaiting erasure"
                )
            row.state = ReleaseState.ERASED.value
            row.erased_at = now.astimezone(UTC)
            add_event(s, row.host_id, now, "weights_erased", _detail(row))
        return row.to_record()

    def get_release(self, release_id: str) -> ReleaseRecord | None:
        with self._reader() as s:
            row = s.get(Release, release_id)
            return None if row is None else row.to_record()

    def live_releases(self, host_id: str) -> list[ReleaseRecord]:
        """The host's RELEASED releases, oldest first (their leases may have run out)."""
        return self._releases_of(host_id, (ReleaseState.RELEASED.value,))

    def awaiting_erasure(self, host_id: str) -> list[ReleaseRecord]:
        """The host's REVOKED and EXPIRED releases, oldest first."""
        return self._releases_of(host_id, _AWAITING_ERASURE)

    def list_releases(
        self, *, host_id: str | None = None, manifest_digest: bytes | None = None
    ) -> list[ReleaseRecord]:
        """Releases, newest first, optionally of one host and/or one model version."""
        query = select(Release).order_by(Release.released_at.desc(), Release.release_id.desc())
        if host_id is not None:
            query = query.where(Release.host_id == host_id)
        if manifest_digest is not None:
            query = query.where(Release.manifest_digest == manifest_digest)
        with self._reader() as s:
            return [r.to_record() for r in s.scalars(query)]

    def _releases_of(self, host_id: str, states: Sequence[str]) -> list[ReleaseRecord]:
        query = (
            select(Release)
            .order_by(*_OLDEST_FIRST)
            .where(Release.host_id == host_id, Release.state.in_(states))
        )
        with self._reader() as s:
            return [r.to_record() for r in s.scalars(query)]

    # -- denials ---------------------------------------------------------------

    def record_release_denial(
        self, *, host_id: str, manifest_digest: bytes, reasons: Sequence[Reason], now: datetime
    ) -> ReleaseDenialRecord:
        """Keep a refused release request with every reason.

        The model version need not be registered, nor the host (its event is
        then skipped: events belong to registered hosts).
        """
        check_id("host_id", host_id)
        check_digest("manifest_digest", manifest_digest)
        if not reasons:
            raise ValueError("a denial must say why")
        require_aware("now", now)
        stored = [{"code": r.code, "detail": r.detail} for r in reasons]
        with self._writing() as s:
            s.add(
                ReleaseDenial(
                    host_id=host_id, manifest_digest=manifest_digest, at=now, reasons=stored
                )
            )
            if s.get(Host, host_id) is not None:
                model = s.get(ModelVersion, manifest_digest)
                label = model.label if model is not None else f"manifest {manifest_digest.hex()}"
                codes = ", ".join(r.code for r in reasons)
                add_event(s, host_id, now, "release_denied", f"{label}: {codes}")
        return ReleaseDenialRecord(host_id, manifest_digest, now.astimezone(UTC), tuple(reasons))

    def release_denials(self, host_id: str, *, limit: int = 50) -> list[ReleaseDenialRecord]:
        """The host's refused requests, newest first."""
        check_limit(limit)
        query = (
            select(ReleaseDenial)
            .where(ReleaseDenial.host_id == host_id)
            .order_by(ReleaseDenial.at.desc(), ReleaseDenial.id.desc())
            .limit(limit)
        )
        with self._reader() as s:
            return [d.to_record() for d in s.scalars(query)]


def _lock_release(s: Session, release_id: str) -> Release:
    """Lock the release's host, then the release (the one lock order); ReleaseNotFound."""
    host_id = s.scalar(select(Release.host_id).where(Release.release_id == release_id))
    if host_id is None:
        raise ReleaseNotFound(release_id)
    lock_host(s, host_id)
    row = s.get(Release, release_id, with_for_update=True)
    assert row is not None  # releases are never deleted
    return row


def _detail(row: Release) -> str:
    return f"{row.model} release {row.release_id}"
