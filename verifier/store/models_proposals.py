"""ORM tables of the two-person rule (created by migration 0005).

``proposals`` holds each proposed change with the state it was proposed over;
its ``state`` moves once, from pending. ``proposal_decisions`` is insert-only;
its primary key (proposal, actor) is what makes one person count once.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from verifier.store.base import Base, one_of
from verifier.store.records_proposals import (
    ProposalDecisionRecord,
    ProposalRecord,
    ProposalState,
)


class ProposalDecisionRow(Base):
    __tablename__ = "proposal_decisions"

    proposal_id: Mapped[str] = mapped_column(ForeignKey("proposals.proposal_id"), primary_key=True)
    actor: Mapped[str] = mapped_column(String(255), primary_key=True)
    approve: Mapped[bool]
    comment: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]

    def to_record(self) -> ProposalDecisionRecord:
        return ProposalDecisionRecord(self.actor, self.approve, self.comment, self.at)


class ProposalRow(Base):
    __tablename__ = "proposals"
    __table_args__ = (
        CheckConstraint(one_of("state", [s.value for s in ProposalState]), name="state"),
        CheckConstraint("required_approvals >= 0", name="required_approvals"),
        CheckConstraint("expires_at > proposed_at", name="expiry"),
    )

    proposal_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    proposer: Mapped[str] = mapped_column(String(255))
    justification: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    base_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    base_digest: Mapped[bytes] = mapped_column(LargeBinary)
    required_approvals: Mapped[int] = mapped_column(Integer)
    proposed_at: Mapped[datetime] = mapped_column(index=True)
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    outcome_detail: Mapped[str] = mapped_column(Text)

    decisions: Mapped[list[ProposalDecisionRow]] = relationship(
        order_by=ProposalDecisionRow.at, lazy="selectin"
    )

    def to_record(self) -> ProposalRecord:
        return ProposalRecord(
            proposal_id=self.proposal_id,
            kind=self.kind,
            target=self.target,
            state=ProposalState(self.state),
            proposer=self.proposer,
            justification=self.justification,
            payload=copy.deepcopy(self.payload),
            base_state=copy.deepcopy(self.base_state),
            required_approvals=self.required_approvals,
            decisions=tuple(d.to_record() for d in self.decisions),
            proposed_at=self.proposed_at,
            expires_at=self.expires_at,
            decided_at=self.decided_at,
            outcome_detail=self.outcome_detail,
        )
