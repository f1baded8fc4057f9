"""`weightgate reference propose-gpu|propose-snp|propose-tdx`, `reference show-*`.

A group's NVIDIA GPU policy (format in verifier/evidence/nvidia/gpu_policy.py),
its AMD SEV-SNP policy (verifier/evidence/snp/policy.py) and its Intel TDX
policy (verifier/evidence/tdx/policy.py) are proposed like its IMA runtime
policy: checked here first, so that a typo is named before anyone is asked to
approve, then checked again by the verifier and applied once approvers other
than the proposer reach the quorum. `reference show-ima|show-gpu|show-snp|show-tdx`
print what is in force.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from verifier.group_document_kinds import (
    GPU_POLICY,
    GROUP_DOCUMENT_KINDS,
    IMA_POLICY,
    SNP_POLICY,
    TDX_POLICY,
    DocumentError,
    document_change,
)
from verifier.operator_cli import (
    RPC_TIMEOUT_SECONDS,
    CliError,
    add_connection_arguments,
    field_time,
)
from verifier.proposal_cli import add_justification_argument, propose
from weightgate.v1 import operator_pb2, operator_pb2_grpc

# propose-* command -> (kind, its help, what the format's module documents, what is
# appraised against it); show-* command -> kind.
_PROPOSE = {
    "propose-gpu": (
        GPU_POLICY,
        "propose a group's NVIDIA GPU policy (CC mode, minimum versions, allowed RIMs)",
        "verifier/evidence/nvidia/gpu_policy.py",
        "GPUs and NVSwitches",
    ),
    "propose-snp": (
        SNP_POLICY,
        "propose a group's AMD SEV-SNP policy (launch measurements, minimum TCB, ...)",
        "verifier/evidence/snp/policy.py",
        "SEV-SNP reports",
    ),
    "propose-tdx": (
        TDX_POLICY,
        "propose a group's Intel TDX policy (MRTD, RTMRs, accepted TCB statuses, ...)",
        "verifier/evidence/tdx/policy.py",
        "TDX quotes",
    ),
}
_SHOW = {
    f"show-{GROUP_DOCUMENT_KINDS[kind].command}": kind
    for kind in (IMA_POLICY, GPU_POLICY, SNP_POLICY, TDX_POLICY)
}
POLICY_COMMANDS = (*_PROPOSE, *_SHOW)


def add_policy_commands(reference_commands: Any) -> None:
    for name, (_, summary, module, appraised) in _PROPOSE.items():
        propose_parser = reference_commands.add_parser(
            name,
            help=summary,
            description=f"The policy format is documented in {module}. It is checked here "
            f"and again by the verifier; once approved, the group's {appraised} are "
            "appraised against it.",
        )
        propose_parser.add_argument("--group", required=True)
        propose_parser.add_argument(
            "--policy", type=Path, required=True, help="the policy JSON file"
        )
        add_justification_argument(propose_parser)
        add_connection_arguments(propose_parser)
    for name, kind in _SHOW.items():
        show = reference_commands.add_parser(
            name, help=f"print a group's {GROUP_DOCUMENT_KINDS[kind].label}"
        )
        show.add_argument("--group", required=True)
        show.add_argument("--json", action="store_true", help="machine-readable output")
        add_connection_arguments(show)


def read_policy(path: Path, kind: str) -> bytes:
    """The file's bytes, once ``kind``'s loader accepts them (CliError: why not)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        GROUP_DOCUMENT_KINDS[kind].check(data)
    except DocumentError as exc:
        raise CliError(f"{path}: {exc}") from None
    return data


def policy_document(policy: operator_pb2.GroupPolicy) -> dict[str, Any]:
    return {
        "group": policy.group,
        "policy": json.loads(policy.policy_json),
        "updated_at": field_time(policy, "updated_at"),
        "proposal_id": policy.proposal_id,
    }


def run_policy_command(
    stub: operator_pb2_grpc.OperatorStub, args: argparse.Namespace
) -> str | None:
    """Dispatch one of ours; None when `args` is not one of them."""
    if args.command != "reference" or args.subcommand not in POLICY_COMMANDS:
        return None
    if args.subcommand in _PROPOSE:
        kind = _PROPOSE[args.subcommand][0]
        change = document_change(kind, args.group, read_policy(args.policy, kind))
        return propose(stub, change, args.justification)
    spec = GROUP_DOCUMENT_KINDS[_SHOW[args.subcommand]]
    request = operator_pb2.GetReferenceValuesRequest(group=args.group)
    policy = getattr(stub, str(spec.read_rpc))(request, timeout=RPC_TIMEOUT_SECONDS)
    document = policy_document(policy)
    if args.json:
        return json.dumps(document, indent=2, sort_keys=True)
    header = (
        f"{spec.label} of group {policy.group}, set by proposal {policy.proposal_id} "
        f"at {document['updated_at']}:"
    )
    return "\n".join([header, json.dumps(document["policy"], indent=2, sort_keys=True)])
