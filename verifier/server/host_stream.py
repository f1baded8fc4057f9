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

from verifier.attestation import Outcome, challenge_selection, evaluate
from verifier.challenges import (
    ChallengeError,
    ChallengeRegistry,
    IssuedChallenge,
    binding_key_qualifying_data,
)
from verifier.config import VerifierConfig
from verifier.evidence.tpm.boot_reference import (
    BootReference,
    BootReferenceError,
    load_boot_reference,
)
from verifier.evidence.tpm.certify import (
    AuthenticatedBindingKey,
    authenticate_binding_key,
    binding_key_policy_digest,
)
from verifier.evidence.tpm.parse import parse_tpm2b_public
from verifier.server.convert import timestamp, verdict_message
from verifier.server.host_watch import HostWatchHub
from verifier.server.ima_rounds import ImaPlan, ImaRounds, with_ima_pcrs
from verifier.server.release_desk import ReleaseDesk
from verifier.store import HostRecord, HostStatus, ReferenceSet, ReleaseRecord, Store
from verifier.verdict import Reason, Verdict, VerificationError
from weightgate.v1 import attestation_pb2, common_pb2

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
        self._binding_key: AuthenticatedBindingKey | None = None
        self._revocations_sent: set[str] = set()
        self._ima = ImaRounds(deps.store)

    def wake(self) -> None:
        """Run the next round now (e.g. the host was quarantined)."""
        self._wake.set()

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
                    desk.request, self.host_id, message.release_request, self._binding_key
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
            reference = await asyncio.to_thread(deps.store.get_reference, host.group)
            ima = await asyncio.to_thread(self._ima.plan, host)
            selection = challenge_selection(deps.config.pcr_selection, reference)
            challenge = deps.challenges.issue(
                host.host_id,
                selection if ima is None else with_ima_pcrs(selection),
                ttl_seconds=deps.config.challenge_timeout_seconds,
            )
            message = self._challenge(challenge, reference)
            if ima is not None:
                message.ima.SetInParent()  # present even when asking from entry 0
                message.ima.from_entry = ima.from_entry
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
                self._appraise, host, challenge, evidence, reference, ima
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

    def _challenge(
        self, challenge: IssuedChallenge, reference: ReferenceSet | None
    ) -> attestation_pb2.Challenge:
        message = attestation_pb2.Challenge(
            challenge_id=challenge.challenge_id,
            nonce=challenge.nonce,
            tpm=attestation_pb2.TpmQuoteRequest(
                qualifying_data=challenge.tpm_qualifying_data,
                pcr_selection=[
                    common_pb2.PcrSelection(hash_algorithm=bank, pcrs=list(pcrs))
                    for bank, pcrs in challenge.pcr_selection.items()
                ],
            ),
            expires_in_seconds=int(self._deps.config.challenge_timeout_seconds),
            # Every round: a log that was verified once says nothing about a later
            # quote, and the `measured_boot_log` control reads the latest verdict.
            want_boot_log=True,
        )
        if reference is not None and self._binding_key_needed(reference):
            message.binding_key.CopyFrom(
                attestation_pb2.BindingKeyRequest(
                    qualifying_data=binding_key_qualifying_data(challenge.nonce),
                    pcr_selection=[
                        common_pb2.PcrSelection(hash_algorithm=bank, pcrs=sorted(values))
                        for bank, values in sorted(reference.pcrs.items())
                    ],
                )
            )
        return message

    def _binding_key_needed(self, reference: ReferenceSet) -> bool:
        if self._binding_key is None:
            return True
        return self._binding_key.public.auth_policy != _expected_policy(reference)

    def _appraise(
        self,
        host: HostRecord,
        challenge: IssuedChallenge,
        evidence: attestation_pb2.Evidence,
        reference: ReferenceSet | None,
        ima: ImaPlan | None,
    ) -> Outcome:
        deps = self._deps
        try:
            redeemed = deps.challenges.redeem(host.host_id, evidence.challenge_id)
        except ChallengeError as exc:
            deps.challenges.discard(challenge.challenge_id)
            return Outcome(Verdict.contraindicated((exc.reason,), ()), None, None)
        try:
            boot_reference = _boot_reference(deps.store, host.group)
        except BootReferenceError as exc:
            reason = Reason("tpm.boot.reference_invalid", f"stored document unusable: {exc}")
            return Outcome(Verdict.contraindicated((reason,), ()), None, None)
        if ima is not None and ima.policy is None:
            reason = Reason("tpm.ima.reference_invalid", f"stored document unusable: {ima.error}")
            return Outcome(Verdict.contraindicated((reason,), ()), None, None)
        outcome = evaluate(
            host=host,
            challenge=redeemed,
            evidence=evidence,
            reference=reference,
            consumed_qualifying_data=deps.challenges.consumed_qualifying_data(host.host_id),
            allow_sha1_signatures=deps.config.allow_sha1_signatures,
            boot_reference=boot_reference,
            ima_policy=None if ima is None else ima.policy,
            ima_kept=None if ima is None else ima.kept,
        )
        if outcome.ima_kept is not None:
            self._ima.save(host.host_id, outcome.ima_kept, now=deps.now())
        if not evidence.HasField("binding_key") or reference is None or host.ak_public is None:
            return outcome
        return self._with_binding_key(host, redeemed, evidence.binding_key, reference, outcome)

    def _with_binding_key(
        self,
        host: HostRecord,
        challenge: IssuedChallenge,
        certification: attestation_pb2.BindingKeyCertification,
        reference: ReferenceSet,
        outcome: Outcome,
    ) -> Outcome:
        """A binding key rides along with the quote; a forged one taints the verdict."""
        assert host.ak_public is not None
        policy = _expected_policy(reference)
        try:
            key = authenticate_binding_key(
                attest=certification.attest,
                signature=certification.signature,
                ak=parse_tpm2b_public(host.ak_public),
                binding_public=certification.public,
                expected_qualifying_data=binding_key_qualifying_data(challenge.nonce),
                expected_policy_digest=policy,
            )
        except VerificationError as exc:
            reasons = (*outcome.verdict.reasons, exc.reason)
            checks = outcome.verdict.checks_run | exc.checks_run
            return Outcome(Verdict.contraindicated(reasons, checks), outcome.clock,
                           outcome.boot_event)  # fmt: skip
        self._binding_key = key
        self._deps.store.set_binding_key(
            host.host_id,
            public=bytes(certification.public),
            policy_digest=policy,
            pcr_selection={bank: sorted(values) for bank, values in reference.pcrs.items()},
            now=self._deps.now(),
        )
        checks = outcome.verdict.checks_run | key.checks_run
        verdict = outcome.verdict
        if verdict.affirms:
            verdict = Verdict.affirming(checks)
        return Outcome(verdict, outcome.clock, outcome.boot_event)


def _expected_policy(reference: ReferenceSet) -> bytes:
    return binding_key_policy_digest(
        selection={bank: sorted(values) for bank, values in reference.pcrs.items()},
        pcr_values=reference.pcrs,
    )


def _boot_reference(store: Store, group: str) -> BootReference | None:
    """The group's measured-boot reference, validated again on every use (it is data)."""
    record = store.get_boot_reference(group)
    return None if record is None else load_boot_reference(record.document)


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
