"""ORM tables of the operators' audit log (created by migration 0003).

``audit_records`` is append-only: the store only ever inserts into it.
``audit_head`` holds exactly one row, the chain head (last seq and hash); every
append locks it first, which serialises appends and makes seq and prev_hash
gap-free and unambiguous.
``audit_checkpoints`` (migration 0004) is insert-only too: signed statements
of the chain's size and head at a time, kept verbatim.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from verifier.audit.chain import AuditRecord
from verifier.store.base import Base

HEAD_ID = 1  # the one row of audit_head


class AuditRecordRow(Base):
    __tablename__ = "audit_records"
    __table_args__ = (CheckConstraint("seq > 0", name="seq"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(128))
    target: Mapped[dict[str, str]] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, str]] = mapped_column(JSON)
    prev_hash: Mapped[bytes]
    hash: Mapped[bytes]

    def to_record(self) -> AuditRecord:
        return AuditRecord(
            seq=self.seq,
            at=self.at,
            actor=self.actor,
            action=self.action,
            target=dict(self.target),
            outcome=self.outcome,
            details=dict(self.details),
            prev_hash=self.prev_hash,
            hash=self.hash,
        )


class AuditHead(Base):
    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint(f"id = {HEAD_ID}", name="singleton"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes]


class AuditCheckpointRow(Base):
    """One signed checkpoint; the columns besides statement and signature only index it."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (CheckConstraint("tree_size >= 0", name="tree_size"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, index=True)
    head_hash: Mapped[bytes]
    signed_at: Mapped[datetime]
    statement: Mapped[bytes]
    signature: Mapped[bytes]
    key_id: Mapped[bytes]
