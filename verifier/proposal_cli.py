"""`weightgate proposals list|show|approve|reject`, and how change commands propose.

Commands that change what is trusted (`reference set`, `sites set`,
`hosts assign`, `reviews propose`) send a proposal; it takes effect once enough
approvers other than the proposer approve it with `weightgate proposals approve`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from verifier.operator_cli import (
    RPC_TIMEOUT_SECONDS,
    CliError,
    add_connection_arguments,
    field_time,
    format_table,
)
from weightgate.v1 import operator_pb2, operator_pb2_grpc

STATE_NAMES = {
    operator_pb2.PROPOSAL_STATE_PENDING: "pending",
    operator_pb2.PROPOSAL_STATE_APPLIED: "applied",
    operator_pb2.PROPOSAL_STATE_REJECTED: "rejected",
    operator_pb2.PROPOSAL_STATE_EXPIRED: "expired",
    operator_pb2.PROPOSAL_STATE_STALE: "stale",
}
STATE_VALUES = {name: value for value, name in STATE_NAMES.items()}


def add_justification_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--justification",
        default="",
        help="why this change is needed; approvers see it and the audit log keeps it",
    )


def add_proposal_commands(commands: Any) -> None:
    proposals = commands.add_parser(
        "proposals",
        help="changes awaiting approval (two-person rule)",
        description="Changes to reference values, sites, host assignments and reviews take "
        "effect only after enough approvers other than the proposer approve them.",
    )
    sub = proposals.add_subparsers(dest="subcommand", required=True)
    listing = sub.add_parser("list", help="proposals, newest first")
    listing.add_argument(
        "--state", choices=sorted(STATE_VALUES), help="only this state (default: all)"
    )
    listing.add_argument("--limit", type=int, default=50, help="how many (default %(default)s)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(listing)
    show = sub.add_parser("show", help="one proposal: the change as a diff, and its decisions")
    show.add_argument("proposal_id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(show)
    for name, text in (
        ("approve", "approve a proposal (it applies at the last approval needed)"),
        ("reject", "reject a proposal (one rejection ends it; proposers may withdraw theirs)"),
    ):
        decide = sub.add_parser(name, help=text)
        decide.add_argument("proposal_id")
        decide.add_argument("--comment", default="", help="kept with the decision")
        add_connection_arguments(decide)


def propose(
    stub: operator_pb2_grpc.OperatorStub, change: operator_pb2.ProposedChange, justification: str
) -> str:
    """Send a proposal and say what happens next."""
    proposal = stub.ProposeChange(
        operator_pb2.ProposeChangeRequest(change=change, justification=justification),
        timeout=RPC_TIMEOUT_SECONDS,
    )
    if proposal.state == operator_pb2.PROPOSAL_STATE_APPLIED:
        return f"applied at once (no approval required here): {proposal.outcome_detail}"
    needed = proposal.required_approvals
    return "\n".join(
        [
            f"proposal {proposal.proposal_id}: {proposal.target}",
            *(f"  {line}" for line in proposal.diff),
            f"awaits {needed} approval{'s' if needed != 1 else ''} from people other than you, "
            f"until {field_time(proposal, 'expires_at')}:",
            f"  weightgate proposals approve {proposal.proposal_id}",
        ]
    )


def run_proposal_command(
    stub: operator_pb2_grpc.OperatorStub, args: argparse.Namespace
) -> str | None:
    """Dispatch a `proposals` command; None when `args` is not one of ours."""
    if args.command != "proposals":
        return None
    if args.subcommand == "list":
        if not 1 <= args.limit <= 500:
            raise CliError("--limit must be 1 to 500")
        state = STATE_VALUES[args.state] if args.state else operator_pb2.PROPOSAL_STATE_UNSPECIFIED
        response = stub.ListProposals(
            operator_pb2.ListProposalsRequest(state=state, limit=args.limit),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        documents = [_document(p) for p in response.proposals]
        if args.json:
            return json.dumps({"proposals": documents}, indent=2)
        rows = [["ID", "STATE", "KIND", "TARGET", "PROPOSER", "APPROVALS", "EXPIRES"]]
        rows += [
            [d["proposal_id"], d["state"], d["kind"], d["target"], d["proposer"],
             f"{len(d['approvers'])}/{d['required_approvals']}", d["expires_at"] or "-"]
            for d in documents
        ]  # fmt: skip
        return format_table(rows) if documents else "no proposals"
    proposal_id = args.proposal_id.strip().lower()
    if args.subcommand == "show":
        proposal = stub.GetProposal(
            operator_pb2.GetProposalRequest(proposal_id=proposal_id), timeout=RPC_TIMEOUT_SECONDS
        )
        return json.dumps(_document(proposal), indent=2) if args.json else _text(proposal)
    request = operator_pb2.DecideProposalRequest(proposal_id=proposal_id, comment=args.comment)
    if args.subcommand == "approve":
        proposal = stub.ApproveProposal(request, timeout=RPC_TIMEOUT_SECONDS)
    else:
        proposal = stub.RejectProposal(request, timeout=RPC_TIMEOUT_SECONDS)
    return _decision_text(proposal)


def _document(proposal: operator_pb2.Proposal) -> dict[str, Any]:
    return {
        "proposal_id": proposal.proposal_id,
        "state": STATE_NAMES.get(proposal.state, "unknown"),
        "kind": proposal.kind,
        "target": proposal.target,
        "proposer": proposal.proposer,
        "justification": proposal.justification,
        "required_approvals": proposal.required_approvals,
        "approvers": [d.actor for d in proposal.decisions if d.approve],
        "decisions": [
            {
                "actor": d.actor,
                "decision": "approve" if d.approve else "reject",
                "comment": d.comment,
                "at": field_time(d, "at"),
            }
            for d in proposal.decisions
        ],
        "proposed_at": field_time(proposal, "proposed_at"),
        "expires_at": field_time(proposal, "expires_at"),
        "decided_at": field_time(proposal, "decided_at"),
        "diff": list(proposal.diff),
        "outcome": proposal.outcome_detail,
    }


def _text(proposal: operator_pb2.Proposal) -> str:
    document = _document(proposal)
    lines = [
        f"proposal {document['proposal_id']} ({document['state']})",
        f"  change:      {document['kind']}: {document['target']}",
        f"  proposed by: {document['proposer']} at {document['proposed_at']}",
        f"  why:         {document['justification'] or '-'}",
        f"  approvals:   {len(document['approvers'])} of {document['required_approvals']}",
        f"  expires:     {document['expires_at']}",
    ]
    if document["decided_at"]:
        lines.append(f"  decided:     {document['decided_at']}: {document['outcome']}")
    lines.append("  diff:")
    lines += [f"    {line}" for line in document["diff"]]
    if document["decisions"]:
        lines.append("  decisions:")
        lines += [
            f"    {d['at']}  {d['actor']}: {d['decision']}"
            + (f" ({d['comment']})" if d["comment"] else "")
            for d in document["decisions"]
        ]
    return "\n".join(lines)


def _decision_text(proposal: operator_pb2.Proposal) -> str:
    state = STATE_NAMES.get(proposal.state, "unknown")
    approvals = sum(1 for d in proposal.decisions if d.approve)
    if state == "applied":
        return f"proposal {proposal.proposal_id} applied: {proposal.outcome_detail}"
    if state == "rejected":
        return f"proposal {proposal.proposal_id} rejected: {proposal.outcome_detail}"
    return (
        f"proposal {proposal.proposal_id}: {approvals} of {proposal.required_approvals} "
        "approvals; waiting for more"
    )
