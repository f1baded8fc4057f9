"""The store's audit log: append one hash-chained record per transaction, read them back.

Appends serialise on the chain head: ``SELECT ... FOR UPDATE`` of the one
``audit_head`` row on PostgreSQL, ``BEGIN IMMEDIATE`` (one writer at a time) on
SQLite. Under that lock the next seq and prev_hash are read, the record hashed,
inserted and the head moved, all in one transaction: concurrent appends from
the server's worker threads produce a gap-free chain, and a crash loses either
nothing or the whole append.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from verifier.audit.chain import AuditEntry, AuditRecord, recompute
from verifier.audit.checkpoint import SignedCheckpoint, parse_statement
from verifier.store._core import StoreCore, check_limit, check_text, require_aware
from verifier.store.audit_search import AuditSearch
from verifier.store.errors import StoreError
from verifier.store.models_audit import HEAD_ID, AuditCheckpointRow, AuditHead, AuditRecordRow

MAX_AUDIT_PAGE = 1000  # records per read: bounds one response, the CLI pages on
MAX_CHECKPOINT_PAGE = 1000  # checkpoints per read, for the same reason
_ACTION_LENGTH = 128  # the action column's width
_OUTCOME_LENGTH = 64  # the outcome column's width


def append_audit_entry(s: Session, entry: AuditEntry) -> AuditRecord:
    """Append ``entry`` inside the caller's transaction (see the module docstring).

    A change and its audit record written through one session commit together
    or not at all: the two-person rule applies a change this way.
    """
    require_aware("at", entry.at)
    check_text("actor", entry.actor)
    for name, value, width in (
        ("action", entry.action, _ACTION_LENGTH),
        ("outcome", entry.outcome, _OUTCOME_LENGTH),
    ):
        if not value or len(value) > width:
            raise ValueError(f"{name} must be 1 to {width} characters")
    head = s.get(AuditHead, HEAD_ID, with_for_update=True)
    if head is None:
        raise StoreError("the audit chain head is missing: the schema was altered")
    row = AuditRecordRow(
        seq=head.seq + 1,
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        target=dict(entry.target),
        outcome=entry.outcome,
        details=dict(entry.details),
        prev_hash=head.hash,
    )
    row.hash = recompute(row.to_record())
    s.add(row)
    head.seq, head.hash = row.seq, row.hash
    return row.to_record()


class AuditMixin(StoreCore):
    def append_audit(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        target: Mapping[str, str],
        outcome: str,
        details: Mapping[str, str],
    ) -> AuditRecord:
        """Append one record to the chain and return it with its seq, prev_hash and hash."""
        entry = AuditEntry(at, actor, action, target, outcome, details)
        with self._writing() as s:
            return append_audit_entry(s, entry)

    def audit_records(
        self,
        *,
        after_seq: int = 0,
        limit: int = 100,
        newest: bool = False,
        search: AuditSearch | None = None,
    ) -> list[AuditRecord]:
        """Records oldest first: those after ``after_seq``, or (``newest``) the last ones.

        At most ``limit`` (capped at MAX_AUDIT_PAGE) records either way, of
        those matching ``search`` when given.
        """
        check_limit(limit)
        if after_seq < 0:
            raise ValueError("after_seq must not be negative")
        limit = min(limit, MAX_AUDIT_PAGE)
        query = select(AuditRecordRow).where(AuditRecordRow.seq > after_seq)
        if search is not None:
            query = query.where(*search.conditions())
        if newest:
            query = query.order_by(AuditRecordRow.seq.desc()).limit(limit)
        else:
            query = query.order_by(AuditRecordRow.seq).limit(limit)
        with self._reader() as s:
            rows = list(s.scalars(query))
        records = [r.to_record() for r in rows]
        return sorted(records, key=lambda r: r.seq) if newest else records

    def audit_head(self) -> tuple[int, bytes]:
        """The chain head: the last record's seq and hash ((0, GENESIS) when empty)."""
        with self._reader() as s:
            head = s.get(AuditHead, HEAD_ID)
            if head is None:
                raise StoreError("the audit chain head is missing: the schema was altered")
            return head.seq, head.hash

    def add_audit_checkpoint(self, checkpoint: SignedCheckpoint) -> None:
        """Keep a signed checkpoint (insert-only); its statement must parse.

        The indexed columns are filled from the statement, never given
        separately, so they cannot disagree with what was signed.
        """
        statement = parse_statement(checkpoint.statement)
        with self._writing() as s:
            s.add(
                AuditCheckpointRow(
                    tree_size=statement.tree_size,
                    head_hash=statement.head_hash,
                    signed_at=statement.signed_at,
                    statement=bytes(checkpoint.statement),
                    signature=bytes(checkpoint.signature),
                    key_id=statement.key_id,
                )
            )

    def audit_checkpoints(self, *, limit: int = 100) -> list[SignedCheckpoint]:
        """The newest checkpoints first (in the order they were added), at most ``limit``."""
        check_limit(limit)
        query = (
            select(AuditCheckpointRow)
            .order_by(AuditCheckpointRow.id.desc())
            .limit(min(limit, MAX_CHECKPOINT_PAGE))
        )
        with self._reader() as s:
            rows = list(s.scalars(query))
        return [SignedCheckpoint(r.statement, r.signature) for r in rows]

    def latest_audit_checkpoint(self) -> SignedCheckpoint | None:
        newest = self.audit_checkpoints(limit=1)
        return newest[0] if newest else None
