"""`weightgate audit list|verify`: read the operators' audit log through the Operator API.

``verify`` fetches every record, recomputes each hash and link, checks the
chain head the verifier reports, and names the first broken record. Reading
the log is itself audited, so the chain grows by one record per page fetched.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import grpc

from verifier.audit.chain import AuditChainBroken, AuditRecord, verify_chain
from verifier.operator_cli import CliError, add_connection_arguments, format_table, operator_channel
from weightgate.v1 import operator_pb2, operator_pb2_grpc

RPC_TIMEOUT_SECONDS = 15.0
PAGE = 1000  # the verifier's cap on one response


def add_audit_commands(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the operators' tamper-evident audit log")
    audit_commands = audit.add_subparsers(dest="subcommand", required=True)
    listing = audit_commands.add_parser("list", help="the newest audit records, oldest first")
    listing.add_argument("--limit", type=int, default=50, help="how many (default %(default)s)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(listing)
    verify = audit_commands.add_parser(
        "verify", help="recompute the whole hash chain; name the first broken record"
    )
    add_connection_arguments(verify)


def record_from_message(message: operator_pb2.AuditRecord) -> AuditRecord:
    return AuditRecord(
        seq=message.seq,
        at=message.at.ToDatetime(tzinfo=UTC),
        actor=message.actor,
        action=message.action,
        target=dict(message.target),
        outcome=message.outcome,
        details=dict(message.details),
        prev_hash=bytes(message.prev_hash),
        hash=bytes(message.hash),
    )


def _as_json(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "at": record.at.isoformat().replace("+00:00", "Z"),
        "actor": record.actor,
        "action": record.action,
        "target": dict(record.target),
        "outcome": record.outcome,
        "details": dict(record.details),
        "prev_hash": record.prev_hash.hex(),
        "hash": record.hash.hex(),
    }


def _line(record: AuditRecord) -> list[str]:
    target = " ".join(f"{k}={v}" for k, v in sorted(record.target.items())) or "-"
    outcome = record.outcome
    if "reason" in record.details:
        outcome += f": {record.details['reason']}"
    at = record.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [str(record.seq), at, record.actor, record.action, target, outcome]


def audit_list(stub: operator_pb2_grpc.OperatorStub, *, limit: int, as_json: bool) -> str:
    if not 1 <= limit <= PAGE:
        raise CliError(f"--limit must be 1 to {PAGE}")
    response = stub.ListAuditRecords(
        operator_pb2.ListAuditRecordsRequest(limit=limit, newest=True),
        timeout=RPC_TIMEOUT_SECONDS,
    )
    records = [record_from_message(m) for m in response.records]
    if as_json:
        return json.dumps([_as_json(r) for r in records], indent=2)
    return format_table(
        [["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME"], *map(_line, records)]
    )


def fetch_all(
    stub: operator_pb2_grpc.OperatorStub,
) -> tuple[list[AuditRecord], tuple[int, bytes]]:
    """Every record, oldest first, and the chain head reported with the first page."""
    records: list[AuditRecord] = []
    head: tuple[int, bytes] | None = None
    for page in _pages(stub):
        if head is None:
            head = (page.head_seq, bytes(page.head_hash))
        records.extend(record_from_message(m) for m in page.records)
    assert head is not None
    return records, head


def _pages(stub: operator_pb2_grpc.OperatorStub) -> Iterator[operator_pb2.ListAuditRecordsResponse]:
    after = 0
    while True:
        page = stub.ListAuditRecords(
            operator_pb2.ListAuditRecordsRequest(after_seq=after, limit=PAGE),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        yield page
        if len(page.records) < PAGE:
            return
        after = page.records[-1].seq


def audit_verify(stub: operator_pb2_grpc.OperatorStub) -> str:
    records, head = fetch_all(stub)
    try:
        count = verify_chain(records, head=head)
    except AuditChainBroken as exc:
        raise ChainBrokenError(str(exc)) from exc
    return f"audit chain intact: {count} records, head {head[0]} {head[1].hex()}"


class ChainBrokenError(Exception):
    pass


def run_audit_command(args: argparse.Namespace) -> int:
    """Exit 0 with the output, 1 on a broken chain or an RPC error, 2 on a usage error."""
    try:
        with operator_channel(args) as channel:
            stub = operator_pb2_grpc.OperatorStub(channel)
            if args.subcommand == "list":
                output = audit_list(stub, limit=args.limit, as_json=args.json)
            else:
                output = audit_verify(stub)
    except CliError as exc:
        print(f"weightgate: {exc}", file=sys.stderr)
        return 2
    except ChainBrokenError as exc:
        print(f"weightgate: audit chain BROKEN: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"weightgate: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(output)
    return 0
