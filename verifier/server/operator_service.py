"""Operator servicer: host status, history and reference values for the CLI.

Every handler is ``@audited``: each call is authorized (verifier.authz) and appends
one record to the audit log, refusals included. WatchHosts, a stream, records its
opening the same way (operator_watch_rpcs).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import grpc

from verifier.audit.recorder import AuditRecorder, audited
from verifier.authz import Authorizer
from verifier.config import ApprovalPolicy
from verifier.keystore import KeyStore
from verifier.server.attestation_service import OpenStreams
from verifier.server.convert import (
    IDENTIFIER,
    event_message,
    host_summary,
    record_message,
    reference_message,
)
from verifier.server.host_watch import HostWatchHub
from verifier.server.operator_audit_rpcs import AuditRpcs
from verifier.server.operator_gate_rpcs import GateRpcs
from verifier.server.operator_policy_rpcs import PolicyRpcs
from verifier.server.operator_proposal_rpcs import ProposalRpcs
from verifier.server.operator_watch_rpcs import WatchRpcs
from verifier.store import HostAlreadyRegistered, HostTransition, Store
from weightgate.v1 import operator_pb2, operator_pb2_grpc

DEFAULT_HISTORY = 20
MAX_HISTORY = 1000

Context = grpc.aio.ServicerContext[object, object]


class OperatorService(
    GateRpcs,
    ProposalRpcs,
    PolicyRpcs,
    AuditRpcs,
    WatchRpcs,
    operator_pb2_grpc.OperatorServicer,
):
    def __init__(
        self,
        store: Store,
        *,
        now: Callable[[], datetime],
        keystore: KeyStore,
        blob_dir: Path,
        open_streams: OpenStreams,
        review_valid_days: int,
        approvals: ApprovalPolicy,
        audit: AuditRecorder,
        authz: Authorizer,
        host_watch: HostWatchHub,
    ) -> None:
        self._store = store
        self._now = now
        self._keystore = keystore
        self._blob_dir = blob_dir
        self._open_streams = open_streams
        self._review_valid_days = review_valid_days
        self._approvals = approvals
        self._audit = audit
        self._authz = authz
        # Publish through it whenever a host's status or site changes (see host_watch).
        self._host_watch = host_watch

    @audited("host_id", details=("group",))
    async def RegisterHost(
        self, request: operator_pb2.RegisterHostRequest, context: Context
    ) -> operator_pb2.HostSummary:
        for field, value in (("host_id", request.host_id), ("group", request.group)):
            if not IDENTIFIER.fullmatch(value):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{field}: expected letters, digits, '.', '_' or '-' (at most 128)",
                )
        try:
            registered = await self._host_watch.apply(
                request.host_id,
                functools.partial(_register, self._store, request.host_id, request.group),
                cause="registered",
            )
        except HostAlreadyRegistered:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS, f"host {request.host_id!r} is already registered"
            )
        return host_summary(registered.host)

    @audited()
    async def ListHosts(
        self, request: operator_pb2.ListHostsRequest, context: Context
    ) -> operator_pb2.ListHostsResponse:
        hosts = await asyncio.to_thread(self._store.list_hosts)
        return operator_pb2.ListHostsResponse(hosts=[host_summary(h) for h in hosts])

    @audited("host_id")
    async def GetHost(
        self, request: operator_pb2.GetHostRequest, context: Context
    ) -> operator_pb2.HostDetail:
        host = await asyncio.to_thread(self._store.get_host, request.host_id)
        if host is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no host {request.host_id!r}")
        limit = min(request.history_limit or DEFAULT_HISTORY, MAX_HISTORY)
        history = await asyncio.to_thread(self._store.history, host.host_id, limit=limit)
        events = await asyncio.to_thread(self._store.events, host.host_id, limit=limit)
        return operator_pb2.HostDetail(
            summary=host_summary(host),
            ak_name=host.ak_name or b"",
            history=[record_message(r) for r in history],
            events=[event_message(e) for e in events],
        )

    @audited("group")
    async def GetReferenceValues(
        self, request: operator_pb2.GetReferenceValuesRequest, context: Context
    ) -> operator_pb2.ReferenceValues:
        reference = await asyncio.to_thread(self._store.get_reference, request.group)
        if reference is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no reference values for group {request.group!r}"
            )
        return reference_message(reference)


def _register(store: Store, host_id: str, group: str) -> HostTransition:
    """Register the host: a change from nothing to "registered", for watchers."""
    host = store.register_host(host_id, group)
    return HostTransition(host, previous_status=None, previous_site=None, at=host.registered_at)
