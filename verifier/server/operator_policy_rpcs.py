"""Operator RPCs that read a host group's policies: IMA runtime, NVIDIA GPU, AMD SEV-SNP,
Intel TDX.

Each is set only by approved proposals (proposal kinds ``ima_policy``, ``gpu_policy``,
``snp_policy`` and ``tdx_policy``); these return the document in force, canonical JSON,
with the proposal that put it there. One handler serves them all, named and worded
by the kind's description (verifier.group_document_kinds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import grpc

from verifier.audit.recorder import AuditRecorder, audited
from verifier.authz import Authorizer
from verifier.group_document_kinds import (
    GPU_POLICY,
    GROUP_DOCUMENT_KINDS,
    IMA_POLICY,
    SNP_POLICY,
    TDX_POLICY,
)
from verifier.server.convert import IDENTIFIER, timestamp
from verifier.server.proposal_diff import canonical_json
from verifier.store import Store
from weightgate.v1 import operator_pb2

Context = grpc.aio.ServicerContext[object, object]


class _Servicer(Protocol):
    _store: Store
    _audit: AuditRecorder
    _authz: Authorizer


_Read = Callable[
    [_Servicer, operator_pb2.GetReferenceValuesRequest, Context],
    Awaitable[operator_pb2.GroupPolicy],
]


def _policy_read(kind: str) -> _Read:
    """The audited handler of ``kind``'s read RPC (its name is the RPC's)."""
    spec = GROUP_DOCUMENT_KINDS[kind]
    if spec.read_rpc is None:
        raise ValueError(f"{kind} has no policy read RPC")

    async def read(
        self: _Servicer, request: operator_pb2.GetReferenceValuesRequest, context: Context
    ) -> operator_pb2.GroupPolicy:
        group = request.group
        if not IDENTIFIER.fullmatch(group):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "group: expected letters, digits, '.', '_' or '-' (at most 128)",
            )
        record = await asyncio.to_thread(self._store.group_document, kind, group)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, spec.not_found(group))
        return operator_pb2.GroupPolicy(
            group=record.group,
            policy_json=canonical_json(record.document),
            updated_at=timestamp(record.updated_at),
            proposal_id=record.proposal_id,
        )

    read.__name__ = read.__qualname__ = spec.read_rpc
    return audited("group")(read)


class PolicyRpcs:
    """Mixed into OperatorService; the attributes below are set by its __init__."""

    _store: Store
    _audit: AuditRecorder
    _authz: Authorizer

    GetImaPolicy = _policy_read(IMA_POLICY)
    GetGpuPolicy = _policy_read(GPU_POLICY)
    GetSnpPolicy = _policy_read(SNP_POLICY)
    GetTdxPolicy = _policy_read(TDX_POLICY)
