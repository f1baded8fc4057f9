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

from verifier.audit.chain import AuditRecord, recompute
from verifier.store._core import StoreCore, check_limit, check_text, require_aware
from verifier.store.errors import StoreError
from verifier.store.models_audit import HEAD_ID, AuditHead, AuditRecordRow

MAX_AUDIT_PAGE = 1000  # records per read: bounds one response, the CLI pages on
_ACTION_LENGTH = 128  # the action column's width
_OUTCOME_LENGTH = 64  # the outcome column's width


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
        require_aware("at", at)
        check_text("actor", actor)
        for name, value, width in (
            ("action", action, _ACTION_LENGTH),
            ("outcome", outcome, _OUTCOME_LENGTH),
        ):
            if not value or len(value) > width:
                raise ValueError(f"{name} must be 1 to {width} characters")
        with self._writing() as s:
            head = s.get(AuditHead, HEAD_ID, with_for_update=True)
            if head is None:
                raise StoreError("the audit chain head is missing: the schema was altered")
            row = AuditRecordRow(
                seq=head.seq + 1,
                at=at,
                actor=actor,
                action=action,
                target=dict(target),
                outcome=outcome,
                details=dict(details),
                prev_hash=head.hash,
            )
            row.hash = recompute(row.to_record())
            s.add(row)
            head.seq, head.hash = row.seq, row.hash
        return row.to_record()

    def audit_records(
        self, *, after_seq: int = 0, limit: int = 100, newest: bool = False
    ) -> list[AuditRecord]:
        """Records oldest first: those after ``after_seq``, or (``newest``) the last ones.

        At most ``limit`` (capped at MAX_AUDIT_PAGE) records either way.
        """
        check_limit(limit)
        if after_seq < 0:
            raise ValueError("after_seq must not be negative")
        limit = min(limit, MAX_AUDIT_PAGE)
        query = select(AuditRecordRow).where(AuditRecordRow.seq > after_seq)
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
