"""`weightgate audit list|search|tail|checkpoint|verify`: the operators' audit log
through the Operator API.

``verify`` fetches every record, recomputes each hash and link, checks the
chain head the verifier reports, then checks the log against signed
checkpoints (those the verifier lists and those the auditor kept), and names
the first broken record. Reading the log is itself audited, so the chain
grows by one record per page fetched.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

import grpc

from verifier.audit.chain import AuditChainBroken, verify_chain
from verifier.audit_checkpoint_cli import (
    AuditVerifyError,
    Sourced,
    audit_checkpoint,
    check_checkpoints,
    listed_checkpoints,
    load_checkpoint_file,
    load_public_key,
)
from verifier.audit_records_cli import (
    audit_list,
    audit_search,
    audit_tail,
    fetch_all,
    search_request,
)
from verifier.operator_cli import CliError, add_connection_arguments, operator_channel
from weightgate.v1 import operator_pb2_grpc

_VERIFY_HELP = """\
Recompute the whole hash chain and check the head the verifier reports; then
check the log against every signed checkpoint the verifier lists and every
--checkpoint file you kept. A log whose records were edited and whose chain was
recomputed still passes the chain check, but not a checkpoint signed before
the edit. Pin the verifier's key (--public-key, the PEM printed by
`weightgate verifier public-key --config FILE`) or the signatures are not
checked, which the output says. Exits 1 naming the first broken record."""

_TAIL_HELP = """\
Print the newest records; with --follow, keep printing new ones as they are
appended until Ctrl-C (exit 0). Each poll is an audited read too: those
records stay in the log but are not printed."""

_SEARCH_HELP = """\
The newest records matching every filter given (AND): exact actor, exact
action, target entries, and a time window [--since, --until). Times are ISO
8601 (2025-03-01 or 2025-03-01T12:00:00Z), UTC unless they name an offset."""


def add_audit_commands(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the operators' tamper-evident audit log")
    subcommands = audit.add_subparsers(dest="subcommand", required=True)

    listing = subcommands.add_parser("list", help="the newest audit records, oldest first")
    listing.add_argument("--limit", type=int, default=50, help="how many (default %(default)s)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(listing)

    search = subcommands.add_parser(
        "search", help="records by actor, action, target or time", description=_SEARCH_HELP
    )
    search.add_argument("--actor", help="who acted, exactly (e.g. a certificate CN)")
    search.add_argument("--action", help="the RPC, exactly (e.g. QuarantineHost)")
    search.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a target entry the record must have, e.g. host_id=gpu-7 (repeatable)",
    )
    search.add_argument("--since", metavar="ISO", help="at or after this time")
    search.add_argument("--until", metavar="ISO", help="before this time")
    search.add_argument(
        "--limit", type=int, default=50, metavar="N", help="how many at most (default %(default)s)"
    )
    search.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(search)

    tail = subcommands.add_parser(
        "tail", help="the newest records, then new ones", description=_TAIL_HELP
    )
    tail.add_argument("--limit", type=int, default=10, help="how many first (default %(default)s)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    tail.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between polls with --follow (default %(default)s)",
    )
    add_connection_arguments(tail)

    checkpoint = subcommands.add_parser(
        "checkpoint",
        help="have the verifier sign its audit head now; keep the result",
        description="Ask the verifier to sign a checkpoint of its audit log now, and print it "
        "as JSON or write it to --out, to keep outside the verifier for `audit verify`.",
    )
    checkpoint.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the checkpoint here (never overwrites) instead of printing",
    )
    add_connection_arguments(checkpoint)

    verify = subcommands.add_parser(
        "verify",
        help="check the hash chain and signed checkpoints; name the first broken record",
        description=_VERIFY_HELP,
    )
    verify.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a checkpoint file kept from `audit checkpoint --out` (repeatable)",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        metavar="PEM",
        help="the verifier's pinned signing public key; checkpoint signatures are checked with it",
    )
    add_connection_arguments(verify)


def audit_verify(
    stub: operator_pb2_grpc.OperatorStub, *, kept: list[Path], public_key: Path | None
) -> str:
    key = load_public_key(public_key) if public_key is not None else None
    sources = [Sourced(f"file {path}", load_checkpoint_file(path)) for path in kept]
    # Checkpoints before records: the log only grows, so every checkpoint read
    # now is covered by the records read next, and a shorter log is truncation.
    sources = listed_checkpoints(stub) + sources
    records, head = fetch_all(stub)
    try:
        count = verify_chain(records, head=head)
    except AuditChainBroken as exc:
        raise AuditVerifyError(str(exc)) from exc
    chain = f"audit chain intact: {count} records, head {head[0]} {head[1].hex()}"
    return f"{chain}\n{check_checkpoints(records, sources, public_key=key)}"


def _run(stub: operator_pb2_grpc.OperatorStub, args: argparse.Namespace) -> str | None:
    if args.subcommand == "list":
        return audit_list(stub, limit=args.limit, as_json=args.json)
    if args.subcommand == "search":
        request = search_request(
            actor=args.actor,
            action=args.action,
            targets=args.target,
            since=args.since,
            until=args.until,
        )
        return audit_search(stub, request, limit=args.limit, as_json=args.json)
    if args.subcommand == "tail":
        with contextlib.suppress(KeyboardInterrupt):  # how `tail --follow` ends: exit 0
            audit_tail(stub, limit=args.limit, follow=args.follow, interval=args.interval)
        return None
    if args.subcommand == "checkpoint":
        return audit_checkpoint(stub, out=args.out)
    return audit_verify(stub, kept=args.checkpoint, public_key=args.public_key)


def run_audit_command(args: argparse.Namespace) -> int:
    """Exit 0 with the output, 1 on a broken log or an RPC error, 2 on a usage error."""
    try:
        with operator_channel(args) as channel:
            output = _run(operator_pb2_grpc.OperatorStub(channel), args)
    except CliError as exc:
        print(f"weightgate: {exc}", file=sys.stderr)
        return 2
    except AuditVerifyError as exc:
        print(f"weightgate: audit chain BROKEN: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"weightgate: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if output is not None:
        print(output)
    return 0
