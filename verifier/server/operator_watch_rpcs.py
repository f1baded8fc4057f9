"""WatchHosts: the selected hosts' state now, then each change of status or site, live.

The stream opens with one audit record (what is watched is trust state, a
sensitive read); refusals are recorded too. Changes come from the process's
HostWatchHub (verifier.server.host_watch): a watcher that falls behind is cut
off with RESOURCE_EXHAUSTED, and a stopping verifier ends every watch with
UNAVAILABLE; both mean "reconnect, and take the current state again".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import grpc

from verifier.audit.recorder import AuditRecorder, audited_call, request_fields
from verifier.authz import OPERATOR, Authorizer, method_name
from verifier.server.convert import IDENTIFIER, STATUSES, host_summary, timestamp
from verifier.server.host_watch import (
    HostChange,
    HostWatchHub,
    Subscription,
    TooManyWatchers,
    WatchClosed,
    WatchFellBehind,
)
from verifier.store import HostRecord, Store
from weightgate.v1 import operator_pb2

Context = grpc.aio.ServicerContext[object, object]
# A filter longer than this is better served by watching every host; the bound
# keeps the request, and the subscription's set, small.
MAX_WATCHED_HOSTS = 1000
SNAPSHOT = "snapshot"
WATCH_HOSTS = method_name(OPERATOR, "WatchHosts")


def change_message(change: HostChange) -> operator_pb2.HostChange:
    previous = change.previous_status
    return operator_pb2.HostChange(
        host=host_summary(change.host),
        previous_status=operator_pb2.HOST_STATUS_UNSPECIFIED
        if previous is None
        else STATUSES[previous],
        at=timestamp(change.at),
        cause=change.cause,
    )


class WatchRpcs:
    """Mixed into OperatorService; the attributes below are set by its __init__."""

    _store: Store
    _now: Callable[[], datetime]
    _audit: AuditRecorder
    _authz: Authorizer
    _host_watch: HostWatchHub

    async def WatchHosts(
        self, request: operator_pb2.WatchHostsRequest, context: Context
    ) -> AsyncIterator[operator_pb2.HostChange]:
        subscription, hosts = await self._open_watch(request, context)
        with subscription:
            if request.include_current:
                at = self._now()
                for host in hosts:
                    yield change_message(HostChange(host, None, SNAPSHOT, at))
            try:
                async for change in subscription:
                    # A watcher whose certificate was revoked sees no change after that.
                    refused = await self._authz.still_admitted(context, WATCH_HOSTS)
                    if refused is not None:
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
                    yield change_message(change)
            except WatchFellBehind as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            except WatchClosed as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def _open_watch(
        self, request: operator_pb2.WatchHostsRequest, context: Context
    ) -> tuple[Subscription, list[HostRecord]]:
        """Authorize, check, subscribe and read the selected hosts: the audited part."""
        wanted = sorted(set(request.host_ids))
        subscription: Subscription | None = None
        try:
            async with audited_call(
                self,
                context,
                action="WatchHosts",
                target=request_fields(request, ("host_ids",)),
                details=request_fields(request, ("include_current",)),
            ) as recording:
                await _check_host_ids(wanted, recording)
                # Refuse unknown hosts before subscribing: an abort sends the status at
                # once, and the client must find no watcher left behind when it sees it.
                await self._selected_hosts(wanted, recording)
                try:
                    # Subscribed before the hosts are read: a change in between is
                    # sent after the snapshot (perhaps repeating it), never lost.
                    subscription = self._host_watch.subscribe(wanted or None)
                except TooManyWatchers as exc:
                    await recording.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
                except WatchClosed as exc:
                    await recording.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
                hosts = await self._selected_hosts(wanted, recording)
        except BaseException:
            if subscription is not None:
                subscription.close()
            raise
        return subscription, hosts

    async def _selected_hosts(self, wanted: list[str], recording: Context) -> list[HostRecord]:
        hosts = await asyncio.to_thread(self._store.list_hosts)
        if not wanted:
            return hosts
        known = {host.host_id for host in hosts}
        unknown = [host_id for host_id in wanted if host_id not in known]
        if unknown:
            await recording.abort(
                grpc.StatusCode.NOT_FOUND, f"host_ids: no host {', '.join(map(repr, unknown))}"
            )
        selected = set(wanted)
        return [host for host in hosts if host.host_id in selected]


async def _check_host_ids(host_ids: list[str], context: Context) -> None:
    if len(host_ids) > MAX_WATCHED_HOSTS:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"host_ids: at most {MAX_WATCHED_HOSTS} (or none, to watch every host)",
        )
    for host_id in host_ids:
        if not IDENTIFIER.fullmatch(host_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"host_ids: {host_id[:130]!r} is not a host id "
                "(letters, digits, '.', '_' or '-'; at most 128)",
            )
