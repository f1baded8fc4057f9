"""Attestation servicer: authenticates the hello, then hands the stream to a HostStream."""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import AsyncIterator

import grpc

from verifier.authz import ATTESTATION, Authorizer, method_name
from verifier.server.convert import IDENTIFIER
from verifier.server.host_stream import HostStream, StreamAbort, StreamDeps
from verifier.store import HostRecord
from weightgate.v1 import attestation_pb2, attestation_pb2_grpc

log = logging.getLogger(__name__)

HELLO_TIMEOUT_SECONDS = 30.0
ATTEST = method_name(ATTESTATION, "Attest")

AttestContext = grpc.aio.ServicerContext[
    attestation_pb2.AgentMessage, attestation_pb2.VerifierMessage
]


class OpenStreams:
    """The open streams per host, so that operator actions can wake them.

    One stream per host: the newest wins. An agent that reconnects after a network
    split may leave its old stream half-open on this side; two live streams would
    both be challenged, both renew leases and race on the host's IMA progress, so
    opening a stream ends the host's older ones (``attestation.superseded``).
    """

    def __init__(self) -> None:
        self._streams: dict[str, set[HostStream]] = {}

    def add(self, stream: HostStream) -> None:
        """Register ``stream`` and end every older stream of the same host."""
        older = self._streams.setdefault(stream.host_id, set())
        for previous in older:
            previous.supersede()
        older.clear()
        older.add(stream)

    def remove(self, stream: HostStream) -> None:
        self._streams.get(stream.host_id, set()).discard(stream)

    def wake(self, host_id: str) -> None:
        for stream in self._streams.get(host_id, set()):
            stream.wake()


class AttestationService(attestation_pb2_grpc.AttestationServicer):
    def __init__(self, deps: StreamDeps, open_streams: OpenStreams, *, authz: Authorizer) -> None:
        self._deps = deps
        self._open_streams = open_streams
        self._authz = authz

    async def Attest(
        self,
        request_iterator: AsyncIterator[attestation_pb2.AgentMessage],
        context: AttestContext,
    ) -> AsyncIterator[attestation_pb2.VerifierMessage]:
        host = await self._hello(request_iterator, context)
        log.info("attestation stream open host=%s peer=%s", host.host_id, context.peer())
        # A certificate revoked while the stream is open ends it at the next round.
        still_admitted = functools.partial(self._authz.still_admitted, context, ATTEST)
        stream = HostStream(self._deps, host, still_admitted=still_admitted)
        self._open_streams.add(stream)
        try:
            async for item in stream.run(request_iterator):
                if isinstance(item, StreamAbort):
                    await context.abort(item.code, item.details)
                yield item
        finally:
            self._open_streams.remove(stream)
            log.info("attestation stream closed host=%s", host.host_id)

    async def _hello(
        self,
        request_iterator: AsyncIterator[attestation_pb2.AgentMessage],
        context: AttestContext,
    ) -> HostRecord:
        identity = await self._authz.require(context, ATTEST)
        try:
            first = await asyncio.wait_for(anext(request_iterator), HELLO_TIMEOUT_SECONDS)
        except (TimeoutError, StopAsyncIteration):
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "expected a hello first")
        if first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
        hello = first.hello
        await self._authz.require_host(context, identity, ATTEST, hello.host_id)
        if not IDENTIFIER.fullmatch(hello.host_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello.host_id: not a valid id")
        host = await asyncio.to_thread(self._deps.store.get_host, hello.host_id)
        if host is None:
            log.warning("attestation from unknown host=%s peer=%s", hello.host_id, context.peer())
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"attestation.unknown_host: host {hello.host_id!r} is not registered",
            )
        if host.ak_name is None or not hmac.compare_digest(host.ak_name, hello.ak_name):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "attestation.not_enrolled: this attestation key is not enrolled; enroll first",
            )
        return host
