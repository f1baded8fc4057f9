"""One host's attestation stream: challenges on a timer, agent requests any time.

Two tasks feed one outbox: the driver (challenge → evidence → verdict → lease
renewals or revocations, then wait for the interval or a wake-up) and the reader
(evidence to the driver; release requests and erase receipts answered at once).
The servicer drains the outbox into the gRPC response stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc

from verifier.attestation import Outcome
from verifier.challenges import ChallengeRegistry, IssuedChallenge
from verifier.config import VerifierConfig
from verifier.evidence.nvidia.host_round import GpuVerifier
from verifier.evidence.snp.host_round import SnpVerifier
from verifier.evidence.tdx.host_round import TdxVerifier
from verifier.server.convert import timestamp, verdict_message
from verifier.server.host_watch import HostWatchHub
from verifier.server.release_desk import ReleaseDesk
from verifier.server.round_appraisal import RoundAppraiser
from verifier.store import HostRecord, HostStatus, ReleaseRecord, Store
from verifier.verdict import Reason
from weightgate.v1 import attestation_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamAbort:
    """Ends the stream with a gRPC status (the servicer calls context.abort)."""

    code: grpc.StatusCode
    details: str


@dataclass(frozen=True)
class StreamDeps:
    store: Store
    challenges: ChallengeRegistry
    config: VerifierConfig
    desk: ReleaseDesk
    now: Callable[[], datetime]
    host_watch: HostWatchHub  # told of every verdict that moves a host's status
    gpu_verifier: GpuVerifier | None = None  # None: no [verifier.nvidia] trust material
    snp_verifier: SnpVerifier | None = None  # None: no [verifier.snp] roots
    tdx_verifier: TdxVerifier | None = None  # None: no [verifier.tdx] root


Outgoing = attestation_pb2.VerifierMessage | StreamAbort
# None while the agent's certificate still admits it, else why not (e.g. revoked):
# asked every round and before every release, so a revoked agent is cut off then.
AdmissionCheck = Callable[[], Awaitable[str | None]]
QUARANTINED = Reason("release.revoked.quarantined", "an operator quarantined the host")


class HostStream:
    def __init__(
        self, deps: StreamDeps, host: HostRecord, *, still_admitted: AdmissionCheck
    ) -> None:
        self.host_id = host.host_id
        self._deps = deps
        self._still_admitted = still_admitted
        self._outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._evidence: asyncio.Queue[attestation_pb2.Evidence | None] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._revocations_sent: set[str] = set()
        self._rounds = RoundAppraiser(
            store=deps.store,
            challenges=deps.challenges,
            config=deps.config,
            now=deps.now,
            gpu_verifier=deps.gpu_verifier,
            snp_verifier=deps.snp_verifier,
            tdx_verifier=deps.tdx_verifier,
        )

    def wake(self) -> None:
        """Run the next round now (e.g. the host was quarantined)."""
        self._wake.set()

    def supersede(self) -> None:
        """End this stream: a newer stream of the same host opened."""
        self._outbox.put_nowait(
            StreamAbort(
                grpc.StatusCode.ABORTED,
                "attestation.superseded: a newer attestation stream of this host opened",
            )
        )

    async def run(
        self, requests: AsyncIterator[attestation_pb2.AgentMessage]
    ) -> AsyncIterator[Outgoing]:
        tasks = [
            asyncio.create_task(self._guard(self._read(requests))),
            asyncio.create_task(self._guard(self._drive())),
        ]
        try:
            while True:
                item = await self._outbox.get()
                yield item
                if isinstance(item, StreamAbort):
                    return
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                    await task

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        """A bug in one round must end the stream visibly, never hang it."""
        try:
            await work
        except (asyncio.CancelledError, grpc.RpcError):
            raise
        except Exception:
            log.exception("attestation stream failed host=%s", self.host_id)
            await self._outbox.put(StreamAbort(grpc.StatusCode.INTERNAL, "internal error"))

    async def _read(self, requests: AsyncIterator[attestation_pb2.AgentMessage]) -> None:
        desk = self._deps.desk
        async for message in requests:
            kind = message.WhichOneof("body")
            if kind == "evidence":
                await self._evidence.put(message.evidence)
            elif kind == "release_request":
                if await self._refused():
                    return
                answer = await asyncio.to_thread(
                    desk.request, self.host_id, message.release_request, self._rounds.binding_key
                )
                await self._outbox.put(answer)
            elif kind == "erase_receipt":
                await asyncio.to_thread(desk.erase_receipt, self.host_id, message.erase_receipt)
            else:
                await self._outbox.put(
                    StreamAbort(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected {kind} message")
                )
                return
        await self._evidence.put(None)

    async def _refused(self) -> bool:
        """End the stream (PERMISSION_DENIED) if the agent is no longer admitted."""
        reason = await self._still_admitted()
        if reason is None:
            return False
        await self._outbox.put(StreamAbort(grpc.StatusCode.PERMISSION_DENIED, reason))
        return True

    async def _drive(self) -> None:
        deps = self._deps
        while True:
            if await self._refused():
                return
            host = await asyncio.to_thread(deps.store.get_host, self.host_id)
            if host is None:
                await self._outbox.put(
                    StreamAbort(grpc.StatusCode.NOT_FOUND, "attestation.unknown_host: removed")
                )
                return
            await self._send_pending_revocations(host)
            plan = await asyncio.to_thread(self._rounds.plan, host)
            challenge, message = self._rounds.challenge(host, plan)
            await self._outbox.put(attestation_pb2.VerifierMessage(challenge=message))
            try:
                evidence = await asyncio.wait_for(
                    self._evidence.get(), deps.config.challenge_timeout_seconds
                )
            except TimeoutError:
                evidence = None
                await self._outbox.put(
                    StreamAbort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        "attestation.evidence_timeout: no evidence for the challenge in time",
                    )
                )
            if evidence is None:
                deps.challenges.discard(challenge.challenge_id)
                return
            outcome = await asyncio.to_thread(
                self._rounds.appraise, host, challenge, evidence, plan
            )
            await self._after_verdict(host, challenge, outcome)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), deps.config.attestation_interval_seconds)

    async def _after_verdict(
        self, host: HostRecord, challenge: IssuedChallenge, outcome: Outcome
    ) -> None:
        deps = self._deps
        appraised_at = deps.now()
        record_attestation = functools.partial(
            deps.store.record_attestation_transition,
            host_id=host.host_id,
            challenge_id=challenge.challenge_id,
            verdict=outcome.verdict,
            appraised_at=appraised_at,
            clock=outcome.clock,
            boot_event=outcome.boot_event,
        )
        recorded = await deps.host_watch.apply(
            host.host_id, record_attestation, cause="attestation"
        )
        record = recorded.record
        codes = ",".join(outcome.verdict.reason_codes()) or "-"
        log.info("verdict host=%s tier=%s reasons=%s", host.host_id, outcome.verdict.tier.value,
                 codes)  # fmt: skip
        await self._outbox.put(
            attestation_pb2.VerifierMessage(
                verdict=verdict_message(
                    outcome.verdict,
                    host_id=host.host_id,
                    appraised_at=appraised_at,
                    result_id=record.result_id,
                )
            )
        )
        withdraw = _withdrawal_reason(host, outcome)
        if withdraw is None:
            # Trust holds; the deployment policy (site, clearance, review) may not.
            lapsed = await asyncio.to_thread(deps.desk.policy_lapses, host.host_id, appraised_at)
            for release, reason in lapsed:
                await self._revoke(release, reason)
            expiry = appraised_at.timestamp() + deps.config.lease_seconds
            renewed = await asyncio.to_thread(
                deps.store.renew_releases,
                host.host_id,
                lease_expires_at=datetime.fromtimestamp(expiry, appraised_at.tzinfo),
                now=appraised_at,
            )
            for release in renewed:
                await self._outbox.put(
                    attestation_pb2.VerifierMessage(
                        lease_renewal=attestation_pb2.LeaseRenewal(
                            release_id=release.release_id,
                            lease_expires_at=timestamp(release.lease_expires_at),
                        )
                    )
                )
            return
        await self._revoke_live(host.host_id, withdraw)

    async def _send_pending_revocations(self, host: HostRecord) -> None:
        """Withdraw everything from a quarantined host, and ask (once per stream, with
        a fresh nonce) for erase receipts still owed, e.g. for leases that expired."""
        if host.status is HostStatus.QUARANTINED:
            await self._revoke_live(host.host_id, QUARANTINED)
        owed = await asyncio.to_thread(self._deps.store.awaiting_erasure, host.host_id)
        for release in owed:
            if release.release_id not in self._revocations_sent:
                reason = Reason(
                    release.revocation_reason or "release.revoked", "erase receipt owed"
                )
                await self._revoke(release, reason)

    async def _revoke_live(self, host_id: str, reason: Reason) -> None:
        for release in await asyncio.to_thread(self._deps.store.live_releases, host_id):
            await self._revoke(release, reason)

    async def _revoke(self, release: ReleaseRecord, reason: Reason) -> None:
        await self._outbox.put(await asyncio.to_thread(self._deps.desk.revoke, release, reason))
        self._revocations_sent.add(release.release_id)


def _withdrawal_reason(host: HostRecord, outcome: Outcome) -> Reason | None:
    """Why live releases must be revoked after this verdict, or None to renew them."""
    if host.status is HostStatus.QUARANTINED:
        return QUARANTINED
    if not outcome.verdict.affirms:
        codes = ", ".join(outcome.verdict.reason_codes())
        return Reason("release.revoked.untrusted", f"attestation failed: {codes}")
    if outcome.boot_event == "reboot":
        return Reason("release.revoked.reboot", "the TPM reset count shows a reboot")
    return None
