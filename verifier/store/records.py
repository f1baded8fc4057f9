"""Plain, frozen values the store hands to callers.

Callers never see ORM objects or sessions: a record is a snapshot that stays
valid after the session is gone and cannot write back to the database by
accident.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from verifier.verdict import Reason, Verdict

# TPM2B clock fields: TPMS_CLOCK_INFO.clock is a UINT64, resetCount and
# restartCount are UINT32 (TPM 2.0 Part 2, 10.11.1).
_UINT64_MAX = 2**64 - 1
_UINT32_MAX = 2**32 - 1
# PCR banks we accept and their digest sizes (tpm2-tools algorithm names); any
# other name is a typo that would silently match nothing during appraisal.
_BANK_DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64, "sm3_256": 32}
_PCR_COUNT = 24  # TCG PC Client platform: PCRs 0-23


class HostStatus(enum.Enum):
    REGISTERED = "registered"
    ENROLLED = "enrolled"
    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"
    # An operator withdrew trust: attestation results no longer move the status.
    QUARANTINED = "quarantined"


class EnrollmentState(enum.StrEnum):
    """Life cycle of one enrollment: it leaves PENDING exactly once."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ClockState:
    """The TPM clock of the last authenticated quote, for rollback detection."""

    clock: int
    reset_count: int
    restart_count: int

    def __post_init__(self) -> None:
        # Bounded here so a bad value fails at the caller, not as a driver
        # overflow in the middle of a transaction.
        if not 0 <= self.clock <= _UINT64_MAX:
            raise ValueError(f"clock out of UINT64 range: {self.clock}")
        for name in ("reset_count", "restart_count"):
            value = getattr(self, name)
            if not 0 <= value <= _UINT32_MAX:
                raise ValueError(f"{name} out of UINT32 range: {value}")


@dataclass(frozen=True, slots=True)
class HostRecord:
    host_id: str
    group: str
    status: HostStatus
    ek_public: bytes | None
    ek_certificate: bytes | None
    ak_public: bytes | None
    ak_name: bytes | None
    registered_at: datetime
    enrolled_at: datetime | None
    last_attestation_at: datetime | None
    last_clock: ClockState | None
    last_reasons: tuple[Reason, ...]
    site: str | None = None


@dataclass(frozen=True, slots=True)
class HostTransition:
    """One write's effect on a host: the host after it, its status and site before.

    Read in the write's own transaction, so a watcher is told what really changed
    (a second read afterwards could see another writer's change).
    """

    host: HostRecord
    previous_status: HostStatus | None  # None: the write created the host
    previous_site: str | None
    at: datetime  # the time the write recorded for the change

    @property
    def changed(self) -> bool:
        """Whether the host's status or site moved (what WatchHosts reports)."""
        return self.previous_status is not self.host.status or self.previous_site != self.host.site


@dataclass(frozen=True, slots=True)
class PendingEnrollment:
    """An enrollment as stored; ``state`` is one of :class:`EnrollmentState`'s values."""

    enrollment_id: str
    host_id: str
    ek_public: bytes
    ek_certificate: bytes
    ak_public: bytes
    ak_name: bytes
    secret_digest: bytes
    expires_at: datetime
    state: str


@dataclass(frozen=True, slots=True)
class AttestationRecord:
    result_id: str
    host_id: str
    challenge_id: str
    appraised_at: datetime
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class RecordedAttestation(HostTransition):
    """:meth:`Store.record_attestation_transition`'s result: the stored result as well."""

    record: AttestationRecord


@dataclass(frozen=True, slots=True)
class HostEvent:
    at: datetime
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class ReferenceSet:
    """Reference PCR values of one host group: ``pcrs[bank][index] = digest``."""

    group: str
    pcrs: dict[str, dict[int, bytes]]
    updated_at: datetime


class ReleaseState(enum.StrEnum):
    """Life cycle of one key release.

    RELEASED -> REVOKED | EXPIRED -> ERASED; ERASED is final. REVOKED and
    EXPIRED both await an erase receipt.
    """

    RELEASED = "released"
    REVOKED = "revoked"
    ERASED = "erased"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ModelVersionRecord:
    """A registered checkpoint, identified by the SHA-256 of its exact manifest bytes."""

    manifest_digest: bytes
    name: str
    version: str
    risk_tier: str
    manifest: bytes
    manifest_signature: bytes
    file_count: int
    plaintext_bytes: int
    added_at: datetime


@dataclass(frozen=True, slots=True)
class SiteRecord:
    site_id: str
    cleared_risk_tiers: frozenset[str]
    description: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """A pre-deployment review of one model version for one site, valid until ``expires_at``."""

    review_id: str
    manifest_digest: bytes
    site_id: str
    risk_tier: str
    reviewer: str
    summary: str
    recorded_at: datetime
    expires_at: datetime
    categories_assessed: tuple[str, ...] = ()
    required_controls: tuple[str, ...] = ()  # verifier.keyrelease.controls names them
    findings: str = ""
    approvers: tuple[str, ...] = ()
    proposal_id: str | None = None  # the approved proposal that made it effective


@dataclass(frozen=True, slots=True)
class BindingKeyRecord:
    """The host's certified binding key: ``pcr_selection[bank]`` is sorted and unique."""

    host_id: str
    public: bytes
    policy_digest: bytes
    pcr_selection: dict[str, tuple[int, ...]]
    certified_at: datetime


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    release_id: str
    host_id: str
    manifest_digest: bytes
    model: str  # "name:version"
    state: ReleaseState
    released_at: datetime
    lease_expires_at: datetime
    renewed_at: datetime | None
    revoked_at: datetime | None  # also set when the lease expired
    erased_at: datetime | None
    revocation_reason: str  # "" while released; "lease_expired" for an expired lease
    erase_qualifying_data: bytes | None  # the nonce the erase receipt must carry


@dataclass(frozen=True, slots=True)
class ReleaseDenialRecord:
    host_id: str
    manifest_digest: bytes
    at: datetime
    reasons: tuple[Reason, ...]


def validated_pcrs(pcrs: Mapping[str, Mapping[int, bytes]]) -> dict[str, dict[int, bytes]]:
    """A copy of ``pcrs`` after checking it is usable as a reference set.

    Raises ValueError for an empty set or bank (appraisal against it would pass
    vacuously), an unknown bank, a PCR index outside 0-23, or a digest of the
    wrong size for its bank.
    """
    if not pcrs:
        raise ValueError("refusing an empty reference set")
    out: dict[str, dict[int, bytes]] = {}
    for bank, by_index in pcrs.items():
        size = _BANK_DIGEST_SIZES.get(bank)
        if size is None:
            raise ValueError(
                f"unknown PCR bank {bank!r}; expected one of {list(_BANK_DIGEST_SIZES)}"
            )
        if not by_index:
            raise ValueError(f"refusing an empty {bank} bank")
        for pcr, value in by_index.items():
            if isinstance(pcr, bool) or not isinstance(pcr, int) or not 0 <= pcr < _PCR_COUNT:
                raise ValueError(f"PCR index out of range: {pcr!r}")
            if not isinstance(value, bytes) or len(value) != size:
                raise ValueError(f"{bank} PCR {pcr}: expected a {size}-byte digest")
        out[bank] = dict(by_index)
    return out


def validated_selection(selection: Mapping[str, Iterable[int]]) -> dict[str, list[int]]:
    """``selection`` as sorted, duplicate-free PCR lists per bank, after checking it.

    Raises ValueError for an empty selection or bank, an unknown bank, or a PCR
    index outside 0-23.
    """
    if not selection:
        raise ValueError("refusing an empty PCR selection")
    out: dict[str, list[int]] = {}
    for bank in sorted(selection):
        if bank not in _BANK_DIGEST_SIZES:
            raise ValueError(
                f"unknown PCR bank {bank!r}; expected one of {list(_BANK_DIGEST_SIZES)}"
            )
        pcrs = list(selection[bank])
        if not pcrs:
            raise ValueError(f"refusing an empty {bank} selection")
        for pcr in pcrs:
            if isinstance(pcr, bool) or not isinstance(pcr, int) or not 0 <= pcr < _PCR_COUNT:
                raise ValueError(f"PCR index out of range: {pcr!r}")
        out[bank] = sorted(set(pcrs))
    return out
