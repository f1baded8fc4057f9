"""Operator RPC for the audit log: read the hash-chained records back."""

from __future__ import annotations

import asyncio

import grpc

from verifier.audit.chain import AuditRecord
from verifier.audit.recorder import AuditRecorder, audited
from verifier.authz import Authorizer
from verifier.server.convert import timestamp
from verifier.store import Store
from weightgate.v1 import operator_pb2

Context = grpc.aio.ServicerContext[object, object]
DEFAULT_AUDIT_PAGE = 100


def audit_message(record: AuditRecord) -> operator_pb2.AuditRecord:
    return operator_pb2.AuditRecord(
        seq=record.seq,
        at=timestamp(record.at),
        actor=record.actor,
        action=record.action,
        target=dict(record.target),
        outcome=record.outcome,
        details=dict(record.details),
        prev_hash=record.prev_hash,
        hash=record.hash,
    )


def _listing(request: operator_pb2.ListAuditRecordsRequest) -> dict[str, str]:
    return {
        "after_seq": str(request.after_seq),
        "limit": str(request.limit),
        "newest": str(request.newest).lower(),
    }


class AuditRpcs:
    """Mixed into OperatorService; the attributes below are set by its __init__."""

    _store: Store
    _audit: AuditRecorder
    _authz: Authorizer

    @audited(details=("after_seq", "limit", "newest"))
    async def ListAuditRecords(  # noqa: N802 - named by the .proto
        self, request: operator_pb2.ListAuditRecordsRequest, context: Context
    ) -> operator_pb2.ListAuditRecordsResponse:
        # The head first: records read after it may run past it, never fall short.
        head_seq, head_hash = await asyncio.to_thread(self._store.audit_head)
        records = await asyncio.to_thread(
            self._store.audit_records,
            after_seq=request.after_seq,
            limit=request.limit or DEFAULT_AUDIT_PAGE,
            newest=request.newest,
        )
        return operator_pb2.ListAuditRecordsResponse(
            records=[audit_message(r) for r in records], head_seq=head_seq, head_hash=head_hash
        )
