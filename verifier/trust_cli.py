"""`weightgate anchors list|add|remove` and `weightgate break-glass`: both proposals.

Trust anchors decide which TPMs may enroll (``tpm_ek``: roots and
intermediates of EK certificates); break-glass lets one host receive one model
version without a site clearance or review for a few hours. Neither takes
effect before its quorum of approvers (see `weightgate proposals`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from verifier.operator_cli import (
    RPC_TIMEOUT_SECONDS,
    CliError,
    add_connection_arguments,
    field_time,
    format_table,
)
from verifier.proposal_cli import add_justification_argument, propose
from weightgate.v1 import operator_pb2, operator_pb2_grpc

PURPOSES = ("tpm_ek",)


def add_trust_commands(commands: Any) -> None:
    anchors = commands.add_parser(
        "anchors",
        help="trust anchors added by approved proposals (beside the config file's)",
    )
    sub = anchors.add_subparsers(dest="subcommand", required=True)
    listing = sub.add_parser("list", help="the anchors approved proposals added")
    listing.add_argument("--purpose", choices=PURPOSES)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(listing)
    for name, text in (
        ("add", "propose trusting a CA certificate (PEM or DER) for a purpose"),
        ("remove", "propose no longer trusting an anchor added by a proposal"),
    ):
        change = sub.add_parser(name, help=text)
        change.add_argument("certificate", type=Path, help="the CA certificate, PEM or DER")
        change.add_argument("--purpose", choices=PURPOSES, default="tpm_ek")
        add_justification_argument(change)
        add_connection_arguments(change)

    glass = commands.add_parser(
        "break-glass",
        help="propose releasing one model version to one host without site clearance or review",
        description="Needs its own, usually larger, quorum. Attestation is never waived: the "
        "host must still be trusted, hold a certified binding key and not be quarantined.",
    )
    glass.add_argument("host")
    glass.add_argument("--model", required=True, help="manifest digest (hex)")
    glass.add_argument("--hours", type=int, required=True, help="1 to 72, from approval")
    add_justification_argument(glass)
    add_connection_arguments(glass)


def run_trust_command(stub: operator_pb2_grpc.OperatorStub, args: argparse.Namespace) -> str | None:
    """Dispatch an `anchors` or `break-glass` command; None when `args` is not one of ours."""
    if args.command == "break-glass":
        try:
            digest = bytes.fromhex(args.model)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise CliError(f"--model {args.model!r} is not a 64-hex-digit manifest digest")
        grant = operator_pb2.BreakGlassRelease(
            host_id=args.host, manifest_digest=digest, hours=args.hours
        )
        return propose(stub, operator_pb2.ProposedChange(break_glass=grant), args.justification)
    if args.command != "anchors":
        return None
    if args.subcommand == "list":
        return _list(stub, args)
    change = operator_pb2.TrustAnchorChange(
        purpose=args.purpose,
        certificate_der=_certificate_der(args.certificate),
        remove=args.subcommand == "remove",
    )
    return propose(stub, operator_pb2.ProposedChange(trust_anchor=change), args.justification)


def _certificate_der(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        certificate = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(data)
        )
    except ValueError as exc:
        raise CliError(f"{path}: not an X.509 certificate: {exc}") from None
    return certificate.public_bytes(serialization.Encoding.DER)


def _list(stub: operator_pb2_grpc.OperatorStub, args: argparse.Namespace) -> str:
    response = stub.ListTrustAnchors(
        operator_pb2.ListTrustAnchorsRequest(purpose=args.purpose or ""),
        timeout=RPC_TIMEOUT_SECONDS,
    )
    documents: list[dict[str, Any]] = [
        {
            "purpose": a.purpose,
            "fingerprint": a.fingerprint.hex(),
            "subject": a.subject,
            "not_after": field_time(a, "not_after"),
            "added_at": field_time(a, "added_at"),
            "proposal_id": a.proposal_id,
        }
        for a in response.anchors
    ]
    if args.json:
        return json.dumps({"anchors": documents}, indent=2)
    rows = [["PURPOSE", "SUBJECT", "SHA-256", "NOT AFTER", "PROPOSAL"]]
    rows += [[d["purpose"], d["subject"], d["fingerprint"][:16], d["not_after"] or "-",
              d["proposal_id"]] for d in documents]  # fmt: skip
    return format_table(rows) if documents else "no anchors added by proposals"
