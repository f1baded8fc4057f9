"""The two-person rule in the store: propose, decide, expire; apply atomically.

Every write here takes the caller's audit entry and appends it in the same
transaction, so a change, the decision that caused it and its audit record
commit together or not at all. A decision locks its proposal row first
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer at a time), so
two approvers racing for the last place cannot both apply, nor apply twice.

Rules enforced here, whatever the caller checked:

* a proposal is decided by people other than its proposer (separation of
  duties): its proposer may withdraw (reject) it, never approve it;
* each person decides a proposal once; a second approval does not count twice;
* one rejection ends it;
* at the M-th approval the change applies, unless what it replaces changed
  since it was proposed (it goes stale) — M = 0 applies it when proposed;
* after ``expires_at`` it can no longer be decided; trying marks it expired.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from verifier.audit.chain import AuditEntry
from verifier.store._core import StoreCore, check_id, check_limit, check_text, require_aware
from verifier.store.errors import StoreError
from verifier.store.models_proposals import ProposalDecisionRow, ProposalRow
from verifier.store.proposal_kinds import (
    KINDS,
    REPLACES_STATE,
    State,
    apply_change,
    state_digest,
    target_state,
)
from verifier.store.records_proposals import ProposalRecord, ProposalState
from verifier.store.store_audit import append_audit_entry

MAX_PROPOSAL_PAGE = 500
SYSTEM_ACTOR = "weightgate-verifier"  # who expires proposals in the audit log


class ProposalNotFound(StoreError):  # noqa: N818 - named like the store's other errors
    pass


class ProposalNotPending(StoreError):  # noqa: N818
    def __init__(self, proposal_id: str, state: ProposalState) -> None:
        super().__init__(f"proposal {proposal_id} is {state.value}, not pending")
        self.state = state


class SelfApproval(StoreError):  # noqa: N818
    """The proposer tried to approve their own proposal."""


class AlreadyDecided(StoreError):  # noqa: N818
    """This person has already approved or rejected this proposal."""


class ProposalsMixin(StoreCore):
    def create_proposal(
        self,
        *,
        kind: str,
        target: str,
        payload: Mapping[str, Any],
        proposer: str,
        justification: str,
        required_approvals: int,
        now: datetime,
        expires_at: datetime,
        audit: AuditEntry,
    ) -> ProposalRecord:
        """Store a pending proposal over the current state (apply it at once if M = 0)."""
        if kind not in KINDS:
            raise ValueError(f"unknown proposal kind {kind!r}")
        check_id("proposer", proposer)
        check_text("target", target)
        require_aware("now", now)
        require_aware("expires_at", expires_at)
        if expires_at <= now:
            raise ValueError("a proposal must expire after it is made")
        if required_approvals < 0:
            raise ValueError("required_approvals must not be negative")
        with self._writing() as s:
            base = target_state(s, kind, payload, now=now)
            row = ProposalRow(
                proposal_id=uuid.uuid4().hex,
                kind=kind,
                target=target,
                state=ProposalState.PENDING.value,
                proposer=proposer,
                justification=justification,
                payload=dict(payload),
                base_state=base,
                base_digest=state_digest(base),
                required_approvals=required_approvals,
                proposed_at=now.astimezone(UTC),
                expires_at=expires_at.astimezone(UTC),
                decided_at=None,
                outcome_detail="",
            )
            s.add(row)
            s.flush()
            if required_approvals == 0:
                _apply(s, row, now)
            details = {**audit.details, "proposal_id": row.proposal_id, "result": row.state}
            append_audit_entry(s, dataclasses.replace(audit, details=details))
            return row.to_record()

    def decide_proposal(
        self,
        proposal_id: str,
        *,
        actor: str,
        approve: bool,
        comment: str,
        now: datetime,
        audit: AuditEntry,
    ) -> ProposalRecord:
        """Record one person's approval or rejection; apply at the quorum.

        Returns the proposal as it stands after the decision. The states
        EXPIRED and STALE mean the decision was refused (and ``audit`` was
        appended with outcome FAILED_PRECONDITION): the caller must say so.
        Raises ProposalNotFound, ProposalNotPending, SelfApproval,
        AlreadyDecided, or the error of a change that can no longer apply;
        then nothing was written.
        """
        check_id("actor", actor)
        require_aware("now", now)
        with self._writing() as s:
            row = s.get(ProposalRow, proposal_id, with_for_update=True)
            if row is None:
                raise ProposalNotFound(proposal_id)
            state = ProposalState(row.state)
            if state is not ProposalState.PENDING:
                raise ProposalNotPending(proposal_id, state)
            if now >= row.expires_at:
                _finish(row, ProposalState.EXPIRED, now, "not approved before it expired")
                _append(s, audit, row, refused="proposal.expired: " + row.outcome_detail)
                return row.to_record()
            if approve and actor == row.proposer:
                raise SelfApproval(f"{actor} proposed {proposal_id} and cannot approve it")
            if any(d.actor == actor for d in row.decisions):
                raise AlreadyDecided(f"{actor} has already decided on {proposal_id}")
            row.decisions.append(
                ProposalDecisionRow(
                    proposal_id=proposal_id,
                    actor=actor,
                    approve=approve,
                    comment=comment,
                    at=now.astimezone(UTC),
                )
            )
            s.flush()
            if not approve:
                withdrawn = actor == row.proposer
                _finish(
                    row,
                    ProposalState.REJECTED,
                    now,
                    f"withdrawn by {actor}" if withdrawn else f"rejected by {actor}",
                )
            elif sum(d.approve for d in row.decisions) >= row.required_approvals:
                current = target_state(s, row.kind, row.payload, now=now)
                if row.kind in REPLACES_STATE and state_digest(current) != row.base_digest:
                    _finish(
                        row,
                        ProposalState.STALE,
                        now,
                        f"the {row.target} changed after this was proposed; propose again",
                    )
                    _append(s, audit, row, refused="proposal.stale: " + row.outcome_detail)
                    return row.to_record()
                _apply(s, row, now)
            _append(s, audit, row)
            return row.to_record()

    def expire_proposals(self, *, now: datetime) -> list[ProposalRecord]:
        """Mark every pending proposal past its expiry expired; one audit record each."""
        require_aware("now", now)
        query = (
            select(ProposalRow)
            .where(ProposalRow.state == ProposalState.PENDING.value)
            .where(ProposalRow.expires_at <= now)
            .with_for_update()
        )
        expired: list[ProposalRecord] = []
        with self._writing() as s:
            for row in s.scalars(query):
                _finish(row, ProposalState.EXPIRED, now, "not approved before it expired")
                entry = AuditEntry(
                    at=now,
                    actor=SYSTEM_ACTOR,
                    action="ExpireProposal",
                    target={"proposal_id": row.proposal_id, "kind": row.kind},
                    outcome="ok",
                    details={"target": row.target},
                )
                append_audit_entry(s, entry)
                expired.append(row.to_record())
        return expired

    def get_proposal(self, proposal_id: str) -> ProposalRecord | None:
        with self._reader() as s:
            row = s.get(ProposalRow, proposal_id)
            return None if row is None else row.to_record()

    def proposal_current_state(self, proposal: ProposalRecord, *, now: datetime) -> State:
        """What ``proposal`` would replace if it applied now (for showing its diff)."""
        with self._reader() as s:
            return target_state(s, proposal.kind, proposal.payload, now=now)

    def list_proposals(
        self, *, state: ProposalState | None = None, limit: int = 100
    ) -> list[ProposalRecord]:
        """Proposals, newest first, optionally in one state."""
        check_limit(limit)
        query = select(ProposalRow)
        if state is not None:
            query = query.where(ProposalRow.state == state.value)
        query = query.order_by(ProposalRow.proposed_at.desc(), ProposalRow.proposal_id)
        with self._reader() as s:
            rows = s.scalars(query.limit(min(limit, MAX_PROPOSAL_PAGE)))
            return [r.to_record() for r in rows]


def _apply(s: Session, row: ProposalRow, now: datetime) -> None:
    approvers = [d.actor for d in row.decisions if d.approve]
    detail = apply_change(
        s,
        row.kind,
        row.payload,
        proposal_id=row.proposal_id,
        proposer=row.proposer,
        approvers=approvers,
        now=now,
    )
    _finish(row, ProposalState.APPLIED, now, detail)


def _finish(row: ProposalRow, state: ProposalState, now: datetime, detail: str) -> None:
    row.state = state.value
    row.decided_at = now.astimezone(UTC)
    row.outcome_detail = detail


def _append(s: Session, audit: AuditEntry, row: ProposalRow, *, refused: str | None = None) -> None:
    details = {**audit.details, "result": row.state}
    outcome = audit.outcome
    if refused is not None:
        details["reason"] = refused
        outcome = "FAILED_PRECONDITION"
    append_audit_entry(s, dataclasses.replace(audit, outcome=outcome, details=details))
