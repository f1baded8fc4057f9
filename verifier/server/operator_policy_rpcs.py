"""Operator RPCs that read a host group's policies: IMA runtime, NVIDIA GPU, AMD SEV-SNP,
Intel TDX.

Each is set only by approved proposals (proposal kinds ``ima_policy``, ``gpu_policy``,
``snp_policy`` and ``tdx_policy``); these return the document in force, canonical JSON,
with the proposal that put it there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from verifier.audit.recorder import AuditRecorder, audited
from verifier.authz import Authorizer
from verifier.server.convert import IDENTIFIER, timestamp
from verifier.server.proposal_diff import canonical_json
from verifier.store import Store
from verifier.store.records_proposals import (
    GpuPolicyRecord,
    ImaPolicyRecord,
    SnpPolicyRecord,
    TdxPolicyRecord,
)
from weightgate.v1 import operator_pb2

Context = grpc.aio.ServicerContext[object, object]


class PolicyRpcs:
    """Mixed into OperatorService; the attributes below are set by its __init__."""

    _store: Store
    _audit: AuditRecorder
    _authz: Authorizer

    @audited("group")
    async def GetImaPolicy(
        self, request: operator_pb2.GetReferenceValuesRequest, context: Context
    ) -> operator_pb2.GroupPolicy:
        return await _group_policy(
            request.group, self._store.get_ima_policy, "IMA runtime policy", context
        )

    @audited("group")
    async def GetGpuPolicy(
        self, request: operator_pb2.GetReferenceValuesRequest, context: Context
    ) -> operator_pb2.GroupPolicy:
        return await _group_policy(
            request.group, self._store.get_gpu_policy, "NVIDIA GPU policy", context
        )

    @audited("group")
    async def GetSnpPolicy(
        self, request: operator_pb2.GetReferenceValuesRequest, context: Context
    ) -> operator_pb2.GroupPolicy:
        return await _group_policy(
            request.group, self._store.get_snp_policy, "AMD SEV-SNP policy", context
        )

    @audited("group")
    async def GetTdxPolicy(
        self, request: operator_pb2.GetReferenceValuesRequest, context: Context
    ) -> operator_pb2.GroupPolicy:
        return await _group_policy(
            request.group, self._store.get_tdx_policy, "Intel TDX policy", context
        )


async def _group_policy(
    group: str,
    read: Callable[
        [str], ImaPolicyRecord | GpuPolicyRecord | SnpPolicyRecord | TdxPolicyRecord | None
    ],
    what: str,
    context: Context,
) -> operator_pb2.GroupPolicy:
    if not IDENTIFIER.fullmatch(group):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "group: expected letters, digits, '.', '_' or '-' (at most 128)",
        )
    record = await asyncio.to_thread(read, group)
    if record is None:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no {what} for group {group!r}")
    return operator_pb2.GroupPolicy(
        group=record.group,
        policy_json=canonical_json(record.document),
        updated_at=timestamp(record.updated_at),
        proposal_id=record.proposal_id,
    )
