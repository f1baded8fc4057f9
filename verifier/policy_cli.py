"""`weightgate reference propose-gpu`, `reference show-ima`, `reference show-gpu`.

A group's NVIDIA GPU policy (format in verifier/evidence/nvidia/gpu_policy.py) is
proposed like its IMA runtime policy: checked here first, so that a typo is
named before anyone is asked to approve, then checked again by the verifier and
applied once approvers other than the proposer reach the quorum.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from verifier.evidence.nvidia.gpu_policy import PolicyError, load_policy
from verifier.operator_cli import (
    RPC_TIMEOUT_SECONDS,
    CliError,
    add_connection_arguments,
    field_time,
)
from verifier.proposal_cli import add_justification_argument, propose
from weightgate.v1 import operator_pb2, operator_pb2_grpc

POLICY_COMMANDS = ("propose-gpu", "show-ima", "show-gpu")


def add_policy_commands(reference_commands: Any) -> None:
    gpu = reference_commands.add_parser(
        "propose-gpu",
        help="propose a group's NVIDIA GPU policy (CC mode, minimum versions, allowed RIMs)",
        description="The policy format is documented in verifier/evidence/nvidia/gpu_policy.py. "
        "It is checked here and again by the verifier; once approved, the group's GPUs and "
        "NVSwitches are appraised against it.",
    )
    gpu.add_argument("--group", required=True)
    gpu.add_argument("--policy", type=Path, required=True, help="the policy JSON file")
    add_justification_argument(gpu)
    add_connection_arguments(gpu)
    for name, what in (("show-ima", "IMA runtime"), ("show-gpu", "NVIDIA GPU")):
        show = reference_commands.add_parser(name, help=f"print a group's {what} policy")
        show.add_argument("--group", required=True)
        show.add_argument("--json", action="store_true", help="machine-readable output")
        add_connection_arguments(show)


def read_gpu_policy(path: Path) -> bytes:
    """The file's bytes, once the GPU policy loader accepts them (CliError: why not)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        load_policy(data)
    except PolicyError as exc:
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
    if args.subcommand == "propose-gpu":
        change = operator_pb2.GpuPolicyChange(
            group=args.group, policy_json=read_gpu_policy(args.policy)
        )
        return propose(stub, operator_pb2.ProposedChange(gpu_policy=change), args.justification)
    request = operator_pb2.GetReferenceValuesRequest(group=args.group)
    if args.subcommand == "show-ima":
        what, policy = "IMA runtime policy", stub.GetImaPolicy(request, timeout=RPC_TIMEOUT_SECONDS)
    else:
        what, policy = "NVIDIA GPU policy", stub.GetGpuPolicy(request, timeout=RPC_TIMEOUT_SECONDS)
    document = policy_document(policy)
    if args.json:
        return json.dumps(document, indent=2, sort_keys=True)
    header = (
        f"{what} of group {policy.group}, set by proposal {policy.proposal_id} "
        f"at {document['updated_at']}:"
    )
    return "\n".join([header, json.dumps(document["policy"], indent=2, sort_keys=True)])
