"""Operator RPCs for the audit log: read (and search) the hash-chained records back,
sign checkpoints of the chain head and list them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from verifier.audit.chain import AuditChainBroken, AuditRecord
from verifier.audit.checkpoint import SignedCheckpoint, parse_statement
from verifier.audit.recorder import AuditRecorder, audited
from verifier.authz import Authorizer
from verifier.keystore import KeyStore
from verifier.server.audit_signer import sign_audit_head
from verifier.server.convert import timestamp
from verifier.store import Store
from verifier.store.audit_search import AuditSearch
from weightgate.v1 import operator_pb2

Context = grpc.aio.ServicerContext[object, object]
DEFAULT_AUDIT_PAGE = 100
DEFAULT_CHECKPOINT_PAGE = 100


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


def checkpoint_message(checkpoint: SignedCheckpoint) -> operator_pb2.AuditCheckpoint:
    """The stored checkpoint; the fields beside statement and signature are read from it."""
    statement = parse_statement(checkpoint.statement)
    return operator_pb2.AuditCheckpoint(
        tree_size=statement.tree_size,
        head_hash=statement.head_hash,
        signed_at=timestamp(statement.signed_at),
        statement=checkpoint.statement,
        signature=checkpoint.signature,
        key_id=statement.key_id,
    )


def audit_search(request: operator_pb2.ListAuditRecordsRequest) -> AuditSearch:
    """The request's search filters; ValueError naming the one that is invalid."""

    def moment(name: str) -> datetime | None:
        if not request.HasField(name):  # type: ignore[arg-type]
            return None
        try:
            return getattr(request, name).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
        except (ValueError, OverflowError):
            raise ValueError(f"{name}: not a valid timestamp") from None

    return AuditSearch(
        actor=request.actor,
        action=request.action,
        target=dict(request.target),
        since=moment("since"),
        until=moment("until"),
    )


class AuditRpcs:
    """Mixed into OperatorService; the attributes below are set by its __init__."""

    _store: Store
    _keystore: KeyStore
    _now: Callable[[], datetime]
    _audit: AuditRecorder
    _authz: Authorizer

    @audited(details=("after_seq", "limit", "newest"))
    async def ListAuditRecords(
        self, request: operator_pb2.ListAuditRecordsRequest, context: Context
    ) -> operator_pb2.ListAuditRecordsResponse:
        try:
            search = audit_search(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        # The head first: records read after it may run past it, never fall short.
        head_seq, head_hash = await asyncio.to_thread(self._store.audit_head)
        records = await asyncio.to_thread(
            self._store.audit_records,
            after_seq=request.after_seq,
            limit=request.limit or DEFAULT_AUDIT_PAGE,
            newest=request.newest,
            search=search,
        )
        return operator_pb2.ListAuditRecordsResponse(
            records=[audit_message(r) for r in records], head_seq=head_seq, head_hash=head_hash
        )

    @audited()
    async def SignAuditCheckpoint(
        self, request: operator_pb2.SignAuditCheckpointRequest, context: Context
    ) -> operator_pb2.AuditCheckpoint:
        try:
            checkpoint = await asyncio.to_thread(
                sign_audit_head, self._store, self._keystore, now=self._now()
            )
        except AuditChainBroken as exc:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"not signing: the audit log no longer matches its newest checkpoint: {exc}",
            )
        return checkpoint_message(checkpoint)

    @audited(details=("limit",))
    async def ListAuditCheckpoints(
        self, request: operator_pb2.ListAuditCheckpointsRequest, context: Context
    ) -> operator_pb2.ListAuditCheckpointsResponse:
        checkpoints = await asyncio.to_thread(
            self._store.audit_checkpoints, limit=request.limit or DEFAULT_CHECKPOINT_PAGE
        )
        return operator_pb2.ListAuditCheckpointsResponse(
            checkpoints=[checkpoint_message(c) for c in checkpoints]
        )
