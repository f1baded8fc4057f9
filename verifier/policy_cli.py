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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verifier.evidence.nvidia import gpu_policy
from verifier.evidence.snp import policy as snp_policy
from verifier.evidence.tdx import policy as tdx_policy
from verifier.operator_cli import (
    RPC_TIMEOUT_SECONDS,
    CliError,
    add_connection_arguments,
    field_time,
)
from verifier.proposal_cli import add_justification_argument, propose
from weightgate.v1 import operator_pb2, operator_pb2_grpc

POLICY_COMMANDS = (
    "propose-gpu", "propose-snp", "propose-tdx", "show-ima", "show-gpu", "show-snp", "show-tdx"
)  # fmt: skip
# show-* command -> what it prints
_SHOW = {
    "show-ima": "IMA runtime policy",
    "show-gpu": "NVIDIA GPU policy",
    "show-snp": "AMD SEV-SNP policy",
    "show-tdx": "Intel TDX policy",
}


def add_policy_commands(reference_commands: Any) -> None:
    gpu = reference_commands.add_parser(
        "propose-gpu",
        help="propose a group's NVIDIA GPU policy (CC mode, minimum versions, allowed RIMs)",
        description="The policy format is documented in verifier/evidence/nvidia/gpu_policy.py. "
        "It is checked here and again by the verifier; once approved, the group's GPUs and "
        "NVSwitches are appraised against it.",
    )
    snp = reference_commands.add_parser(
        "propose-snp",
        help="propose a group's AMD SEV-SNP policy (launch measurements, minimum TCB, ...)",
        description="The policy format is documented in verifier/evidence/snp/policy.py. "
        "It is checked here and again by the verifier; once approved, the group's SEV-SNP "
        "reports are appraised against it.",
    )
    tdx = reference_commands.add_parser(
        "propose-tdx",
        help="propose a group's Intel TDX policy (MRTD, RTMRs, accepted TCB statuses, ...)",
        description="The policy format is documented in verifier/evidence/tdx/policy.py. "
        "It is checked here and again by the verifier; once approved, the group's TDX "
        "quotes are appraised against it.",
    )
    for propose_parser in (gpu, snp, tdx):
        propose_parser.add_argument("--group", required=True)
        propose_parser.add_argument(
            "--policy", type=Path, required=True, help="the policy JSON file"
        )
        add_justification_argument(propose_parser)
        add_connection_arguments(propose_parser)
    for name, what in _SHOW.items():
        show = reference_commands.add_parser(name, help=f"print a group's {what}")
        show.add_argument("--group", required=True)
        show.add_argument("--json", action="store_true", help="machine-readable output")
        add_connection_arguments(show)


def _read_policy(path: Path, load: Callable[[bytes], object], error: type[Exception]) -> bytes:
    """The file's bytes, once ``load`` accepts them (CliError: why not)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        load(data)
    except error as exc:
        raise CliError(f"{path}: {exc}") from None
    return data


def read_gpu_policy(path: Path) -> bytes:
    """The file's bytes, once the GPU policy loader accepts them (CliError: why not)."""
    return _read_policy(path, gpu_policy.load_policy, gpu_policy.PolicyError)


def read_snp_policy(path: Path) -> bytes:
    """The file's bytes, once the SEV-SNP policy loader accepts them (CliError: why not)."""
    return _read_policy(path, snp_policy.load_policy, snp_policy.PolicyError)


def read_tdx_policy(path: Path) -> bytes:
    """The file's bytes, once the TDX policy loader accepts them (CliError: why not)."""
    return _read_policy(path, tdx_policy.load_policy, tdx_policy.PolicyError)


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
    if args.subcommand == "propose-gpu":
        change = operator_pb2.ProposedChange(
            gpu_policy=operator_pb2.GpuPolicyChange(
                group=args.group, policy_json=read_gpu_policy(args.policy)
            )
        )
        return propose(stub, change, args.justification)
    if args.subcommand == "propose-snp":
        change = operator_pb2.ProposedChange(
            snp_policy=operator_pb2.SnpPolicyChange(
                group=args.group, policy_json=read_snp_policy(args.policy)
            )
        )
        return propose(stub, change, args.justification)
    if args.subcommand == "propose-tdx":
        change = operator_pb2.ProposedChange(
            tdx_policy=operator_pb2.TdxPolicyChange(
                group=args.group, policy_json=read_tdx_policy(args.policy)
            )
        )
        return propose(stub, change, args.justification)
    what, request = _SHOW[args.subcommand], operator_pb2.GetReferenceValuesRequest(group=args.group)
    if args.subcommand == "show-ima":
        policy = stub.GetImaPolicy(request, timeout=RPC_TIMEOUT_SECONDS)
    elif args.subcommand == "show-gpu":
        policy = stub.GetGpuPolicy(request, timeout=RPC_TIMEOUT_SECONDS)
    elif args.subcommand == "show-snp":
        policy = stub.GetSnpPolicy(request, timeout=RPC_TIMEOUT_SECONDS)
    else:
        policy = stub.GetTdxPolicy(request, timeout=RPC_TIMEOUT_SECONDS)
    document = policy_document(policy)
    if args.json:
        return json.dumps(document, indent=2, sort_keys=True)
    header = (
        f"{what} of group {policy.group}, set by proposal {policy.proposal_id} "
        f"at {document['updated_at']}:"
    )
    return "\n".join([header, json.dumps(document["policy"], indent=2, sort_keys=True)])
