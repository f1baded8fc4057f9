"""Audit records and their hash chain: the canonical encoding, the hash, verification.

Each record commits to its predecessor: ``hash = SHA-256(encode(record))`` where
the encoding covers every field, ``prev_hash`` included, so changing, removing
or reordering any stored record breaks every later link. The first record's
``prev_hash`` is :data:`GENESIS` (32 zero bytes).

Canonical encoding (version 1), all integers big-endian::

    b"weightgate.audit.v1\\x00"
    seq            u64
    at             i64 microseconds since 1970-01-01T00:00:00Z
    actor          u32 length || UTF-8
    action         u32 length || UTF-8
    target         u32 length || canonical JSON (see below)
    outcome        u32 length || UTF-8
    details        u32 length || canonical JSON
    prev_hash      32 bytes

Canonical JSON of a str -> str mapping: keys sorted, no whitespace
(separators ``,`` and ``:``), non-ASCII kept as UTF-8 (``ensure_ascii=False``).
Length prefixes make the encoding injective: no two different records encode
to the same bytes, whatever characters their strings hold.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

DOMAIN = b"weightgate.audit.v1\x00"
GENESIS = bytes(32)
HASH_SIZE = 32
OK = "ok"  # the outcome of an RPC that succeeded; otherwise the gRPC status code name
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: datetime  # timezone-aware; microsecond precision, as both databases keep it
    actor: str
    action: str
    target: Mapping[str, str]
    outcome: str
    details: Mapping[str, str]
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record still to be appended: everything but its place in the chain."""

    at: datetime
    actor: str
    action: str
    target: Mapping[str, str]
    outcome: str
    details: Mapping[str, str]


class AuditChainBroken(Exception):  # noqa: N818 - named for what it reports
    """The first record (by sequence) that does not link or does not hash as stored."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"audit record {seq}: {reason}")
        self.seq = seq
        self.reason = reason


def micros(at: datetime) -> int:
    """Microseconds since the epoch; refuses naive datetimes (no guessing the zone)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("audit timestamps must be timezone-aware")
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def canonical_json(mapping: Mapping[str, str]) -> bytes:
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("audit targets and details map strings to strings")
    return json.dumps(
        dict(mapping), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def encode(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: Mapping[str, str],
    outcome: str,
    details: Mapping[str, str],
    prev_hash: bytes,
) -> bytes:
    """The canonical encoding (version 1) described in the module docstring."""
    if len(prev_hash) != HASH_SIZE:
        raise ValueError("prev_hash must be a 32-byte SHA-256 digest")
    return b"".join(
        (
            DOMAIN,
            struct.pack(">Q", seq),
            struct.pack(">q", micros(at)),
            _field(actor.encode()),
            _field(action.encode()),
            _field(canonical_json(target)),
            _field(outcome.encode()),
            _field(canonical_json(details)),
            prev_hash,
        )
    )


def record_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: Mapping[str, str],
    outcome: str,
    details: Mapping[str, str],
    prev_hash: bytes,
) -> bytes:
    return hashlib.sha256(
        encode(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            details=details,
            prev_hash=prev_hash,
        )
    ).digest()


def recompute(record: AuditRecord) -> bytes:
    """The hash the record should carry, from its own fields."""
    return record_hash(
        seq=record.seq,
        at=record.at,
        actor=record.actor,
        action=record.action,
        target=record.target,
        outcome=record.outcome,
        details=record.details,
        prev_hash=record.prev_hash,
    )


def verify_chain(
    records: Iterable[AuditRecord],
    *,
    head: tuple[int, bytes] | None = None,
    start: tuple[int, bytes] = (0, GENESIS),
) -> int:
    """Check a run of records, oldest first; return how many were checked.

    Checks, per record, in order: its seq follows the previous one (no gap, no
    reordering); its prev_hash is the previous record's hash (``start``'s hash
    for the first one: GENESIS when the run starts at seq 1); its hash is the
    SHA-256 of its canonical encoding. Then, if ``head`` (seq, hash) is given,
    the run must reach that seq and the record there must carry that hash: a
    truncated tail is caught too. Raises :class:`AuditChainBroken` naming the
    first record that fails.
    """
    seq, previous = start
    count = 0
    at_head: bytes | None = None
    for record in records:
        expected = seq + 1
        if record.seq != expected:
            raise AuditChainBroken(expected, f"missing (next stored record is {record.seq})")
        if record.prev_hash != previous:
            raise AuditChainBroken(record.seq, "prev_hash does not match the previous record")
        if recompute(record) != record.hash:
            raise AuditChainBroken(record.seq, "hash does not match the record's contents")
        seq, previous = record.seq, record.hash
        count += 1
        if head is not None and record.seq == head[0]:
            at_head = record.hash
    if head is not None and head[0] > start[0]:
        if at_head is None:
            raise AuditChainBroken(seq + 1, f"missing (the chain head is at {head[0]})")
        if at_head != head[1]:
            raise AuditChainBroken(head[0], "hash differs from the chain head's")
    return count
