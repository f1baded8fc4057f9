"""Operator RPCs of the two-person rule: propose, list, show, approve, reject.

The change, the decision that reaches the quorum and the call's audit record
are written in one transaction (verifier.store.store_proposals); the handlers
validate, name the caller from its certificate, and turn the store's refusals
into status codes with reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

import grpc

from verifier.audit.recorder import (
    AuditRecorder,
    audited,
    recorded_in_transaction,
    transactional_entry,
)
from verifier.authz import Authorizer
from verifier.config import ApprovalPolicy
from verifier.identity import Role
from verifier.keyrelease.controls import CONTROLS
from verifier.server.convert import review_message, site_message, timestamp
from verifier.server.host_watch import HostWatchHub
from verifier.server.proposal_changes import (
    TEXT_LIMIT,
    ChangeError,
    change_from_message,
    change_message,
)
from verifier.server.proposal_diff import canonical_json, diff_lines
from verifier.store import (
    AlreadyDecided,
    HostNotFound,
    ModelVersionNotFound,
    ProposalNotFound,
    ProposalNotPending,
    ProposalRecord,
    ProposalState,
    SelfApproval,
    SiteNotFound,
    Store,
    StoreError,
)
from verifier.store.proposal_kinds import HOST_SITE, REVIEW
from weightgate.v1 import operator_pb2

Context = grpc.aio.ServicerContext[object, object]
PROPOSAL_ID = re.compile(r"[0-9a-f]{32}")
DEFAULT_PROPOSAL_PAGE = 50
STATES = {
    ProposalState.PENDING: operator_pb2.PROPOSAL_STATE_PENDING,
    ProposalState.APPLIED: operator_pb2.PROPOSAL_STATE_APPLIED,
    ProposalState.REJECTED: operator_pb2.PROPOSAL_STATE_REJECTED,
    ProposalState.EXPIRED: operator_pb2.PROPOSAL_STATE_EXPIRED,
    ProposalState.STALE: operator_pb2.PROPOSAL_STATE_STALE,
}
_STATE_OF_MESSAGE = {v: k for k, v in STATES.items()}
_DECIDERS = frozenset({Role.APPROVER, Role.SECURITY_ADMIN})


def proposal_message(proposal: ProposalRecord, diff: list[str]) -> operator_pb2.Proposal:
    message = operator_pb2.Proposal(
        proposal_id=proposal.proposal_id,
        kind=proposal.kind,
        target=proposal.target,
        state=STATES[proposal.state],
        proposer=proposal.proposer,
        justification=proposal.justification,
        change=change_message(proposal.kind, proposal.payload),
        required_approvals=proposal.required_approvals,
        decisions=[
            operator_pb2.ProposalDecision(
                actor=d.actor, approve=d.approve, comment=d.comment, at=timestamp(d.at)
            )
            for d in proposal.decisions
        ],
        proposed_at=timestamp(proposal.proposed_at),
        expires_at=timestamp(proposal.expires_at),
        diff=diff,
        outcome_detail=proposal.outcome_detail,
    )
    if proposal.decided_at is not None:
        message.decided_at.CopyFrom(timestamp(proposal.decided_at))
    return message


class ProposalRpcs:
    """Mixed into OperatorService; the attributes below are set by its __init__."""

    _store: Store
    _now: Callable[[], datetime]
    _review_valid_days: int
    _approvals: ApprovalPolicy
    _audit: AuditRecorder
    _authz: Authorizer
    _host_watch: HostWatchHub

    @audited(details=("justification",))
    async def ProposeChange(
        self, request: operator_pb2.ProposeChangeRequest, context: Context
    ) -> operator_pb2.Proposal:
        identity = self._authz.identity(context)
        try:
            change = change_from_message(
                request.change, default_review_days=self._review_valid_days
            )
        except ChangeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if len(request.justification) > TEXT_LIMIT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "justification: too long")
        if change.kind == REVIEW and not change.payload["risk_tier"]:
            model = await asyncio.to_thread(
                self._store.get_model_version, bytes.fromhex(change.payload["manifest_digest"])
            )
            if model is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no such model version")
            change.payload["risk_tier"] = model.risk_tier
        required = self._approvals.required[change.kind]
        now = self._now()
        entry = transactional_entry(
            context,
            {"kind": change.kind, "required_approvals": str(required)},
            target=change.ids,
        )
        try:
            async with self._host_order(change.kind, change.payload):
                proposal = await asyncio.to_thread(
                    self._store.create_proposal,
                    kind=change.kind,
                    target=change.target,
                    payload=change.payload,
                    proposer=identity.name,
                    justification=request.justification,
                    required_approvals=required,
                    now=now,
                    expires_at=now + timedelta(seconds=self._approvals.ttl_seconds),
                    audit=entry,
                )
                await self._publish_site_change(proposal)
        except (HostNotFound, SiteNotFound, ModelVersionNotFound) as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, _not_found(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        recorded_in_transaction(context)
        return proposal_message(proposal, await self._diff(proposal))

    @audited(details=("state", "limit"))
    async def ListProposals(
        self, request: operator_pb2.ListProposalsRequest, context: Context
    ) -> operator_pb2.ListProposalsResponse:
        await asyncio.to_thread(self._store.expire_proposals, now=self._now())
        state = _STATE_OF_MESSAGE.get(request.state)
        proposals = await asyncio.to_thread(
            self._store.list_proposals, state=state, limit=request.limit or DEFAULT_PROPOSAL_PAGE
        )
        return operator_pb2.ListProposalsResponse(
            proposals=[proposal_message(p, await self._diff(p)) for p in proposals]
        )

    @audited("proposal_id")
    async def GetProposal(
        self, request: operator_pb2.GetProposalRequest, context: Context
    ) -> operator_pb2.Proposal:
        await self._check_id(request.proposal_id, context)
        await asyncio.to_thread(self._store.expire_proposals, now=self._now())
        proposal = await asyncio.to_thread(self._store.get_proposal, request.proposal_id)
        if proposal is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such proposal")
        return proposal_message(proposal, await self._diff(proposal))

    @audited("proposal_id", details=("comment",))
    async def ApproveProposal(
        self, request: operator_pb2.DecideProposalRequest, context: Context
    ) -> operator_pb2.Proposal:
        return await self._decide(request, context, approve=True)

    @audited("proposal_id", details=("comment",))
    async def RejectProposal(
        self, request: operator_pb2.DecideProposalRequest, context: Context
    ) -> operator_pb2.Proposal:
        return await self._decide(request, context, approve=False)

    @audited()
    async def ListSites(
        self, request: operator_pb2.ListSitesRequest, context: Context
    ) -> operator_pb2.ListSitesResponse:
        sites = await asyncio.to_thread(self._store.list_sites)
        return operator_pb2.ListSitesResponse(sites=[site_message(s) for s in sites])

    @audited("manifest_digest", "site_id", details=("effective_only",))
    async def ListReviews(
        self, request: operator_pb2.ListReviewsRequest, context: Context
    ) -> operator_pb2.ListReviewsResponse:
        reviews = await asyncio.to_thread(
            self._store.list_reviews,
            manifest_digest=bytes(request.manifest_digest) or None,
            site_id=request.site_id or None,
            effective_at=self._now() if request.effective_only else None,
        )
        return operator_pb2.ListReviewsResponse(
            reviews=[review_message(r) for r in reviews], known_controls=sorted(CONTROLS)
        )

    @audited("group")
    async def GetBootReference(
        self, request: operator_pb2.GetReferenceValuesRequest, context: Context
    ) -> operator_pb2.BootReference:
        reference = await asyncio.to_thread(self._store.get_boot_reference, request.group)
        if reference is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no measured-boot reference for group {request.group!r}"
            )
        return operator_pb2.BootReference(
            group=reference.group,
            reference_json=canonical_json(reference.document),
            updated_at=timestamp(reference.updated_at),
            proposal_id=reference.proposal_id,
        )

    @audited("purpose")
    async def ListTrustAnchors(
        self, request: operator_pb2.ListTrustAnchorsRequest, context: Context
    ) -> operator_pb2.ListTrustAnchorsResponse:
        anchors = await asyncio.to_thread(self._store.trust_anchors, request.purpose or None)
        return operator_pb2.ListTrustAnchorsResponse(
            anchors=[
                operator_pb2.TrustAnchor(
                    purpose=a.purpose,
                    certificate_der=a.certificate_der,
                    fingerprint=a.fingerprint,
                    subject=a.subject,
                    not_after=timestamp(a.not_after),
                    added_at=timestamp(a.added_at),
                    proposal_id=a.proposal_id,
                )
                for a in anchors
            ]
        )

    # -- helpers -------------------------------------------------------------------

    async def _decide(
        self, request: operator_pb2.DecideProposalRequest, context: Context, *, approve: bool
    ) -> operator_pb2.Proposal:
        await self._check_id(request.proposal_id, context)
        if len(request.comment) > TEXT_LIMIT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "comment: too long")
        identity = self._authz.identity(context)
        existing = await asyncio.to_thread(self._store.get_proposal, request.proposal_id)
        # Operators hold RejectProposal only to withdraw their own proposals.
        mere_operator = not identity.roles & _DECIDERS
        if mere_operator and existing is not None and existing.proposer != identity.name:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "authz.denied: only approvers may reject another person's proposal",
            )
        entry = transactional_entry(context, {"decision": "approve" if approve else "reject"})
        kind, payload = (existing.kind, existing.payload) if existing else ("", {})
        try:
            async with self._host_order(kind, payload):
                proposal = await asyncio.to_thread(
                    self._store.decide_proposal,
                    request.proposal_id,
                    actor=identity.name,
                    approve=approve,
                    comment=request.comment,
                    now=self._now(),
                    audit=entry,
                )
                await self._publish_site_change(proposal)
        except ProposalNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such proposal")
        except ProposalNotPending as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"proposal.not_pending: {exc}")
        except SelfApproval as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"proposal.self_approval: {exc}")
        except AlreadyDecided as exc:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"proposal.already_decided: {exc}; each person counts once",
            )
        except (HostNotFound, SiteNotFound, ModelVersionNotFound) as exc:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"proposal.cannot_apply: {_not_found(exc)}"
            )
        except (StoreError, ValueError) as exc:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"proposal.cannot_apply: {exc}"
            )
        recorded_in_transaction(context)
        if proposal.state in (ProposalState.EXPIRED, ProposalState.STALE):
            # Refused; the store recorded the refusal with the state change.
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"proposal.{proposal.state.value}: {proposal.outcome_detail}",
            )
        return proposal_message(proposal, await self._diff(proposal))

    def _host_order(
        self, kind: str, payload: Mapping[str, Any]
    ) -> AbstractAsyncContextManager[None]:
        """Order a host's site change with its other writes, as watchers must see them."""
        if kind == HOST_SITE:
            return self._host_watch.ordered(str(payload["host_id"]))
        return contextlib.nullcontext()

    async def _publish_site_change(self, proposal: ProposalRecord) -> None:
        """Tell `hosts watch` about an applied host-to-site assignment that moved the host."""
        if proposal.kind != HOST_SITE or proposal.state is not ProposalState.APPLIED:
            return
        old = (proposal.base_state or {}).get("site_id")
        if old == proposal.payload["site_id"] or proposal.decided_at is None:
            return
        host = await asyncio.to_thread(self._store.get_host, proposal.payload["host_id"])
        if host is not None:
            self._host_watch.publish(
                host, previous=host.status, cause="site_assigned", at=proposal.decided_at
            )

    async def _diff(self, proposal: ProposalRecord) -> list[str]:
        base = proposal.base_state
        if proposal.state is ProposalState.PENDING:
            try:
                base = await asyncio.to_thread(
                    self._store.proposal_current_state, proposal, now=self._now()
                )
            except StoreError as exc:  # e.g. the host it names is gone
                return [f"(cannot apply now: {exc})"]
        return diff_lines(proposal.kind, base, proposal.payload)

    async def _check_id(self, proposal_id: str, context: Context) -> None:
        if not PROPOSAL_ID.fullmatch(proposal_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "proposal_id: expected 32 lowercase hex digits"
            )


def _not_found(exc: StoreError) -> str:
    kind = {HostNotFound: "host", SiteNotFound: "site", ModelVersionNotFound: "model version"}
    return f"no {kind.get(type(exc), 'such')} {exc}"
