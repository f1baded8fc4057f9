"""Reading audit records through the Operator API: `weightgate audit list|search|tail`.

Every read is itself an audited Operator RPC, so each page fetched adds one
record to the log; ``tail --follow`` leaves its own polls out of what it
prints (they are still in the log), or it would mostly show itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from verifier.audit.chain import AuditRecord
from verifier.operator_cli import CliError, format_table
from weightgate.v1 import operator_pb2, operator_pb2_grpc

RPC_TIMEOUT_SECONDS = 15.0
PAGE = 1000  # the verifier's cap on one response
HEADER = ["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME"]
_READ_ACTION = "ListAuditRecords"


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


def record_json(record: AuditRecord) -> dict[str, Any]:
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


def record_row(record: AuditRecord) -> list[str]:
    target = " ".join(f"{k}={v}" for k, v in sorted(record.target.items())) or "-"
    outcome = record.outcome
    if "reason" in record.details:
        outcome += f": {record.details['reason']}"
    at = record.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [str(record.seq), at, record.actor, record.action, target, outcome]


def render(records: Sequence[AuditRecord], *, as_json: bool) -> str:
    if as_json:
        return json.dumps([record_json(r) for r in records], indent=2, ensure_ascii=False)
    return format_table([HEADER, *map(record_row, records)])


def check_limit(limit: int) -> None:
    if not 1 <= limit <= PAGE:
        raise CliError(f"--limit must be 1 to {PAGE}")


def audit_list(stub: operator_pb2_grpc.OperatorStub, *, limit: int, as_json: bool) -> str:
    check_limit(limit)
    response = stub.ListAuditRecords(
        operator_pb2.ListAuditRecordsRequest(limit=limit, newest=True),
        timeout=RPC_TIMEOUT_SECONDS,
    )
    return render([record_from_message(m) for m in response.records], as_json=as_json)


def parse_time(option: str, text: str) -> Timestamp:
    """ISO 8601 (a date, or a date and time); UTC unless it names an offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{option}: {text!r} is not an ISO 8601 date or time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def parse_targets(entries: Sequence[str]) -> dict[str, str]:
    targets: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise CliError(f"--target {entry!r}: expected KEY=VALUE, e.g. host_id=gpu-7")
        if key in targets:
            raise CliError(f"--target {key} given twice")
        targets[key] = value
    return targets


def search_request(
    *,
    actor: str | None,
    action: str | None,
    targets: Sequence[str],
    since: str | None,
    until: str | None,
) -> operator_pb2.ListAuditRecordsRequest:
    """A request carrying the search filters (paging fields left to the caller)."""
    request = operator_pb2.ListAuditRecordsRequest(
        actor=actor or "", action=action or "", target=parse_targets(targets)
    )
    if since is not None:
        request.since.CopyFrom(parse_time("--since", since))
    if until is not None:
        request.until.CopyFrom(parse_time("--until", until))
    return request


def audit_search(
    stub: operator_pb2_grpc.OperatorStub,
    request: operator_pb2.ListAuditRecordsRequest,
    *,
    limit: int,
    as_json: bool,
) -> str:
    """The newest ``limit`` matching records, oldest first."""
    check_limit(limit)
    request.limit, request.newest = limit, True
    response = stub.ListAuditRecords(request, timeout=RPC_TIMEOUT_SECONDS)
    records = [record_from_message(m) for m in response.records]
    if not records and not as_json:
        return "no matching audit records"
    return render(records, as_json=as_json)


def audit_tail(
    stub: operator_pb2_grpc.OperatorStub,
    *,
    limit: int,
    follow: bool,
    interval: float,
    write: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Write the newest ``limit`` records; with ``follow``, then each new one as it
    appears, polling every ``interval`` seconds until interrupted (Ctrl-C)."""
    write = write or _print_now
    sleep = sleep or pause
    check_limit(limit)
    if not 0.1 <= interval <= 3600:
        raise CliError("--interval must be 0.1 to 3600 seconds")
    first = stub.ListAuditRecords(
        operator_pb2.ListAuditRecordsRequest(limit=limit, newest=True),
        timeout=RPC_TIMEOUT_SECONDS,
    )
    records = [record_from_message(m) for m in first.records]
    rows = [HEADER, *map(record_row, records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    for row in rows:
        write(_aligned(row, widths))
    if not follow:
        return
    after = max(first.head_seq, records[-1].seq if records else 0)
    polls: set[int] = set()  # the after_seq of each of our polls: their records are ours
    while True:
        sleep(interval)
        for record in _new_records(stub, after, polls):
            after = record.seq
            if not _is_own_poll(record, polls):
                write(_aligned(record_row(record), widths))


def _new_records(
    stub: operator_pb2_grpc.OperatorStub, after: int, polls: set[int]
) -> Iterator[AuditRecord]:
    while True:
        polls.add(after)
        page = stub.ListAuditRecords(
            operator_pb2.ListAuditRecordsRequest(after_seq=after, limit=PAGE),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        for message in page.records:
            yield record_from_message(message)
        if len(page.records) < PAGE:
            return
        after = page.records[-1].seq


def _is_own_poll(record: AuditRecord, polls: set[int]) -> bool:
    if record.action != _READ_ACTION or record.outcome != "ok":
        return False
    expected = {"limit": str(PAGE), "newest": "false"}
    details = dict(record.details)
    after = details.pop("after_seq", "")
    return details == expected and after.isdigit() and int(after) in polls


def _aligned(row: list[str], widths: list[int]) -> str:
    cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
    return "  ".join(cells).rstrip()


def fetch_all(
    stub: operator_pb2_grpc.OperatorStub,
) -> tuple[list[AuditRecord], tuple[int, bytes]]:
    """Every record, oldest first, and the chain head reported with the first page."""
    records: list[AuditRecord] = []
    head: tuple[int, bytes] | None = None
    after = 0
    while True:
        page = stub.ListAuditRecords(
            operator_pb2.ListAuditRecordsRequest(after_seq=after, limit=PAGE),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        if head is None:
            head = (page.head_seq, bytes(page.head_hash))
        records.extend(record_from_message(m) for m in page.records)
        if len(page.records) < PAGE:
            return records, head
        after = page.records[-1].seq


def pause(seconds: float) -> None:
    """Wait between polls (looked up at call time, so tests can stand in for it)."""
    time.sleep(seconds)


def _print_now(line: str) -> None:
    print(line, flush=True)  # a follower reads lines as they come, not when a buffer fills
