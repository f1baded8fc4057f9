"""Proposals under the two-person rule, as plain frozen values."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias


class ProposalState(enum.StrEnum):
    """A proposal leaves PENDING exactly once."""

    PENDING = "pending"
    APPLIED = "applied"  # the quorum approved it and the change took effect
    REJECTED = "rejected"  # an approver rejected it, or its proposer withdrew it
    EXPIRED = "expired"  # the quorum was not reached in time
    STALE = "stale"  # what it would replace changed after it was proposed


@dataclass(frozen=True, slots=True)
class ProposalDecisionRecord:
    actor: str
    approve: bool
    comment: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """One proposed change: what (``kind``, ``payload``), over which state
    (``base_state`` as it was when proposed, ``None`` when there was none), by
    whom, and the decisions on it so far."""

    proposal_id: str
    kind: str
    target: str
    state: ProposalState
    proposer: str
    justification: str
    payload: Mapping[str, Any]
    base_state: Mapping[str, Any] | None
    required_approvals: int
    decisions: tuple[ProposalDecisionRecord, ...]
    proposed_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    outcome_detail: str

    @property
    def approvers(self) -> tuple[str, ...]:
        """Who approved, in order; each person once (the store refuses a second decision)."""
        return tuple(d.actor for d in self.decisions if d.approve)


@dataclass(frozen=True, slots=True)
class TrustAnchorRecord:
    """A CA certificate trusted for ``purpose`` because an approved proposal added it."""

    purpose: str
    fingerprint: bytes  # SHA-256 of certificate_der
    certificate_der: bytes
    subject: str
    not_after: datetime
    added_at: datetime
    proposal_id: str


@dataclass(frozen=True, slots=True)
class BreakGlassRecord:
    """An approved waiver of site clearance and review for one host and model version."""

    grant_id: str
    host_id: str
    manifest_digest: bytes
    granted_at: datetime
    expires_at: datetime
    proposal_id: str
    approvers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroupDocumentRecord:
    """A host group's document of one kind (verifier.group_document_kinds), as an
    approved proposal set it."""

    group: str
    document: Mapping[str, Any]
    updated_at: datetime
    proposal_id: str


# One record shape for every kind; the names say which kind a caller reads.
BootReferenceRecord: TypeAlias = GroupDocumentRecord
ImaPolicyRecord: TypeAlias = GroupDocumentRecord
GpuPolicyRecord: TypeAlias = GroupDocumentRecord
SnpPolicyRecord: TypeAlias = GroupDocumentRecord
TdxPolicyRecord: TypeAlias = GroupDocumentRecord


@dataclass(frozen=True, slots=True)
class ImaProgress:
    """How far a host's IMA list has been replayed and appraised in its current boot.

    ``entry_count`` entries (from the list's start) are accounted for; ``pcrs``
    holds the running PCR10 per bank after them (hex). Only valid while the TPM's
    ``reset_count`` is unchanged: a reboot starts a new list.
    """

    host_id: str
    reset_count: int
    entry_count: int
    pcrs: Mapping[str, str]
    updated_at: datetime
