"""The verifier's persistent store: one class, same behaviour on SQLite and PostgreSQL.

Every write is a single transaction. Rows a decision depends on are locked
first (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite),
always host before enrollment or release, so concurrent calls from the gRPC
server's worker threads (and the lease sweeper) serialise instead of
interleaving or deadlocking.

The class is assembled from parts: hosts, enrollment, attestation and
reference values here; model versions, sites, reviews and binding keys in
``store_models``; key releases and denials in ``store_releases``; the
operators' audit log in ``store_audit``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from verifier.store._core import (
    add_event,
    check_id,
    check_limit,
    check_text,
    lock_host,
    require_aware,
    utcnow,
)
from verifier.store.changes import read_reference, replace_reference
from verifier.store.errors import (
    EnrollmentNotFound,
    HostAlreadyRegistered,
    HostNotFound,
    HostQuarantined,
    ModelVersionExists,
    ModelVersionNotFound,
    ReleaseNotFound,
    ReleaseStateError,
    SiteNotFound,
    StoreError,
)
from verifier.store.models import (
    AttestationResult,
    Enrollment,
    Host,
    HostEventRow,
)
from verifier.store.records import (
    AttestationRecord,
    ClockState,
    EnrollmentState,
    HostEvent,
    HostRecord,
    HostStatus,
    HostTransition,
    PendingEnrollment,
    RecordedAttestation,
    ReferenceSet,
)
from verifier.store.store_audit import AuditMixin
from verifier.store.store_models import ModelsMixin
from verifier.store.store_proposals import ProposalsMixin
from verifier.store.store_releases import ReleasesMixin
from verifier.store.store_trust import TrustMixin
from verifier.verdict import Verdict

__all__ = [
    "EnrollmentNotFound",
    "HostAlreadyRegistered",
    "HostNotFound",
    "HostQuarantined",
    "ModelVersionExists",
    "ModelVersionNotFound",
    "ReleaseNotFound",
    "ReleaseStateError",
    "SiteNotFound",
    "Store",
    "StoreError",
]

_BOOT_EVENTS = frozenset({"reboot", "restart"})  # the kinds worth an event
_SHA256_SIZE = 32
QUARANTINE_CODE = "host.quarantined"


class Store(ModelsMixin, ReleasesMixin, AuditMixin, ProposalsMixin, TrustMixin):
    """Persistent verifier state. Build with :meth:`open`; safe to share between threads."""

    # -- hosts ---------------------------------------------------------------

    def register_host(self, host_id: str, group: str) -> HostRecord:
        check_id("host_id", host_id)
        check_id("group", group)
        now = utcnow()
        try:
            with self._writing() as s:
                if s.get(Host, host_id) is not None:
                    raise HostAlreadyRegistered(host_id)
                host = Host(
                    host_id=host_id,
                    group=group,
                    status=HostStatus.REGISTERED.value,
                    registered_at=now,
                    last_reasons=[],
                )
                s.add(host)
                # A concurrent registration on PostgreSQL surfaces here.
                s.flush()
                add_event(s, host_id, now, "registered", f"group {group}")
        except IntegrityError as exc:
            raise HostAlreadyRegistered(host_id) from exc
        return host.to_record()

    def get_host(self, host_id: str) -> HostRecord | None:
        with self._reader() as s:
            host = s.get(Host, host_id)
            return None if host is None else host.to_record()

    def host_ids_with_ek(self, ek_public: bytes) -> list[str]:
        """Hosts whose enrolled TPM has this endorsement key (exact bytes)."""
        with self._reader() as s:
            query = select(Host.host_id).where(Host.ek_public == ek_public).order_by(Host.host_id)
            return list(s.scalars(query))

    def list_hosts(self) -> list[HostRecord]:
        with self._reader() as s:
            return [h.to_record() for h in s.scalars(select(Host).order_by(Host.host_id))]

    # -- enrollment ----------------------------------------------------------

    def create_enrollment(
        self,
        *,
        host_id: str,
        ek_public: bytes,
        ek_certificate: bytes,
        ak_public: bytes,
        ak_name: bytes,
        secret_digest: bytes,
        expires_at: datetime,
    ) -> str:
        """Store a pending enrollment and return its id.

        Earlier pending enrollments of the host are marked expired: only the
        newest challenge may bind keys, so an abandoned one cannot be finished
        later with a different AK.
        """
        require_aware("expires_at", expires_at)
        if len(secret_digest) != _SHA256_SIZE:
            raise ValueError("secret_digest must be a SHA-256 digest of the credential secret")
        enrollment_id = uuid.uuid4().hex
        with self._writing() as s:
            if s.get(Host, host_id, with_for_update=True) is None:
                raise HostNotFound(host_id)
            s.execute(
                update(Enrollment)
                .where(Enrollment.host_id == host_id)
                .where(Enrollment.state == EnrollmentState.PENDING)
                .values(state=EnrollmentState.EXPIRED.value)
            )
            s.add(
                Enrollment(
                    enrollment_id=enrollment_id,
                    host_id=host_id,
                    ek_public=ek_public,
                    ek_certificate=ek_certificate,
                    ak_public=ak_public,
                    ak_name=ak_name,
                    secret_digest=secret_digest,
                    created_at=utcnow(),
                    expires_at=expires_at,
                    state=EnrollmentState.PENDING.value,
                )
            )
        return enrollment_id

    def get_enrollment(self, enrollment_id: str) -> PendingEnrollment | None:
        with self._reader() as s:
            row = s.get(Enrollment, enrollment_id)
            return None if row is None else row.to_record()

    def finish_enrollment(
        self, enrollment_id: str, *, succeeded: bool, now: datetime
    ) -> HostRecord:
        """As :meth:`finish_enrollment_transition`; the host after it only."""
        return self.finish_enrollment_transition(enrollment_id, succeeded=succeeded, now=now).host

    def finish_enrollment_transition(
        self, enrollment_id: str, *, succeeded: bool, now: datetime
    ) -> HostTransition:
        """Close a pending enrollment; there is exactly one attempt per enrollment.

        Raises EnrollmentNotFound unless the enrollment exists, is pending and
        has not expired at ``now``; a pending one found expired is marked so.
        """
        require_aware("now", now)
        with self._writing() as s:
            host_id = s.scalar(
                select(Enrollment.host_id).where(Enrollment.enrollment_id == enrollment_id)
            )
            host = None if host_id is None else s.get(Host, host_id, with_for_update=True)
            enrollment = s.get(Enrollment, enrollment_id, with_for_update=True)
            if host is None or enrollment is None or enrollment.state != EnrollmentState.PENDING:
                raise EnrollmentNotFound(enrollment_id)
            before = HostStatus(host.status), host.site
            expired = enrollment.expires_at <= now
            if expired:
                enrollment.state = EnrollmentState.EXPIRED.value
            elif succeeded:
                enrollment.state = EnrollmentState.SUCCEEDED.value
                host.ek_public = enrollment.ek_public
                host.ek_certificate = enrollment.ek_certificate
                host.ak_public = enrollment.ak_public
                host.ak_name = enrollment.ak_name
                # Re-enrolling is no way out of quarantine.
                if host.status != HostStatus.QUARANTINED.value:
                    host.status = HostStatus.ENROLLED.value
                host.enrolled_at = now
                # New AK, new TPM perhaps: the old clock is no rollback baseline.
                host.last_clock = host.last_reset_count = host.last_restart_count = None
                add_event(s, host.host_id, now, "enrolled", f"enrollment {enrollment_id}")
            else:
                enrollment.state = EnrollmentState.FAILED.value
                add_event(s, host.host_id, now, "enrollment_failed", f"enrollment {enrollment_id}")
        # Outside the transaction, so that marking it expired is committed.
        if expired:
            raise EnrollmentNotFound(f"{enrollment_id} (expired)")
        return HostTransition(host.to_record(), *before, now)

    # -- attestation ---------------------------------------------------------

    def record_attestation(
        self,
        *,
        host_id: str,
        challenge_id: str,
        verdict: Verdict,
        appraised_at: datetime,
        clock: ClockState | None,
        boot_event: str | None,
    ) -> AttestationRecord:
        """As :meth:`record_attestation_transition`; the stored result only."""
        return self.record_attestation_transition(
            host_id=host_id,
            challenge_id=challenge_id,
            verdict=verdict,
            appraised_at=appraised_at,
            clock=clock,
            boot_event=boot_event,
        ).record

    def record_attestation_transition(
        self,
        *,
        host_id: str,
        challenge_id: str,
        verdict: Verdict,
        appraised_at: datetime,
        clock: ClockState | None,
        boot_event: str | None,
    ) -> RecordedAttestation:
        """Append a result and move the host's status, clock and events with it.

        A quarantined host keeps its status (and its quarantine reason ahead of
        the verdict's reasons); the result is stored all the same.

        ``clock`` is given only when the quote was authenticated; an
        unauthenticated clock must never become the rollback baseline.
        ``boot_event`` "reboot" or "restart" is logged as an event of that
        kind; any other value (authenticate's "none", or None) logs nothing.
        """
        require_aware("appraised_at", appraised_at)
        check_id("challenge_id", challenge_id)
        reasons = [{"code": r.code, "detail": r.detail} for r in verdict.reasons]
        result_id = uuid.uuid4().hex
        with self._writing() as s:
            host = s.get(Host, host_id, with_for_update=True)
            if host is None:
                raise HostNotFound(host_id)
            s.add(
                AttestationResult(
                    result_id=result_id,
                    host_id=host_id,
                    challenge_id=challenge_id,
                    appraised_at=appraised_at,
                    tier=verdict.tier.value,
                    reasons=reasons,
                    checks_run=sorted(verdict.checks_run),
                )
            )
            old = HostStatus(host.status)
            new = HostStatus.TRUSTED if verdict.affirms else HostStatus.UNTRUSTED
            if old is HostStatus.QUARANTINED:
                # Only an operator lifts a quarantine; its reason stays in front.
                new = old
                kept = [r for r in host.last_reasons if r["code"] == QUARANTINE_CODE]
                reasons = kept + reasons
            host.status = new.value
            host.last_attestation_at = appraised_at
            host.last_reasons = reasons
            if clock is not None:
                host.last_clock = clock.clock
                host.last_reset_count = clock.reset_count
                host.last_restart_count = clock.restart_count
            if boot_event in _BOOT_EVENTS:
                detail = "" if clock is None else _clock_detail(clock)
                add_event(s, host_id, appraised_at, boot_event, detail)
            if new is not old:
                detail = f"{old.value} -> {new.value}"
                if verdict.reasons:
                    detail += f": {verdict.reasons[0]}"
                add_event(s, host_id, appraised_at, "status_changed", detail)
        record = AttestationRecord(result_id, host_id, challenge_id, appraised_at, verdict)
        # An attestation never moves the site: the site before is the site after.
        return RecordedAttestation(host.to_record(), old, host.site, appraised_at, record)

    def quarantine_host(self, host_id: str, *, reason: str, now: datetime) -> HostRecord:
        """As :meth:`quarantine_host_transition`; the host after it only."""
        return self.quarantine_host_transition(host_id, reason=reason, now=now).host

    def quarantine_host_transition(
        self, host_id: str, *, reason: str, now: datetime
    ) -> HostTransition:
        """Withdraw trust until an operator clears it; attestation no longer moves the status.

        Releases are not touched here: the caller revokes them (each revocation
        needs a fresh erase challenge), and :meth:`create_release` refuses the
        host from now on.
        """
        check_text("reason", reason)
        require_aware("now", now)
        with self._writing() as s:
            host = lock_host(s, host_id)
            old = host.status
            host.status = HostStatus.QUARANTINED.value
            host.last_reasons = [{"code": QUARANTINE_CODE, "detail": reason}]
            add_event(s, host_id, now, "quarantined", f"{old} -> quarantined: {reason}")
        # A quarantine never moves the site: the site before is the site after.
        return HostTransition(host.to_record(), HostStatus(old), host.site, now)

    def history(self, host_id: str, *, limit: int = 50) -> list[AttestationRecord]:
        """The host's results, newest first."""
        check_limit(limit)
        query = (
            select(AttestationResult)
            .where(AttestationResult.host_id == host_id)
            .order_by(AttestationResult.appraised_at.desc(), AttestationResult.result_id.desc())
            .limit(limit)
        )
        with self._reader() as s:
            return [r.to_record() for r in s.scalars(query)]

    def events(self, host_id: str, *, limit: int = 50) -> list[HostEvent]:
        """The host's events, newest first."""
        check_limit(limit)
        query = (
            select(HostEventRow)
            .where(HostEventRow.host_id == host_id)
            .order_by(HostEventRow.at.desc(), HostEventRow.id.desc())
            .limit(limit)
        )
        with self._reader() as s:
            return [HostEvent(e.at, e.kind, e.detail) for e in s.scalars(query)]

    # -- reference values ----------------------------------------------------

    def set_reference(
        self, group: str, pcrs: Mapping[str, Mapping[int, bytes]], *, now: datetime
    ) -> ReferenceSet:
        """Replace the group's reference set directly (setup and tests; operators propose it)."""
        with self._writing() as s:
            return replace_reference(s, group, pcrs, now=now)

    def get_reference(self, group: str) -> ReferenceSet | None:
        with self._reader() as s:
            return read_reference(s, group)


# -- conversions and checks ----------------------------------------------------


def _copy_pcrs(pcrs: Mapping[str, Mapping[int, bytes]]) -> dict[str, dict[int, bytes]]:
    return {bank: dict(by_index) for bank, by_index in pcrs.items()}


def _clock_detail(clock: ClockState) -> str:
    return f"reset_count={clock.reset_count} restart_count={clock.restart_count}"
