"""Attestation servicer: the verifier-driven challenge/evidence/verdict stream."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import grpc

from verifier.attestation import Outcome, challenge_selection, evaluate
from verifier.challenges import ChallengeError, ChallengeRegistry, IssuedChallenge
from verifier.config import VerifierConfig
from verifier.server.convert import IDENTIFIER, verdict_message
from verifier.store import HostRecord, ReferenceSet, Store
from verifier.verdict import Verdict
from weightgate.v1 import attestation_pb2, attestation_pb2_grpc, common_pb2

log = logging.getLogger(__name__)

HELLO_TIMEOUT_SECONDS = 30.0

AttestContext = grpc.aio.ServicerContext[
    attestation_pb2.AgentMessage, attestation_pb2.VerifierMessage
]


class AttestationService(attestation_pb2_grpc.AttestationServicer):
    def __init__(
        self,
        store: Store,
        registry: ChallengeRegistry,
        config: VerifierConfig,
        *,
        now: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._registry = registry
        self._config = config
        self._now = now

    async def Attest(
        self,
        request_iterator: AsyncIterator[attestation_pb2.AgentMessage],
        context: AttestContext,
    ) -> AsyncIterator[attestation_pb2.VerifierMessage]:
        host = await self._hello(request_iterator, context)
        log.info("attestation stream open host=%s peer=%s", host.host_id, context.peer())
        while True:
            # Re-read each round: enrollment or reboots recorded elsewhere change it.
            current = await asyncio.to_thread(self._store.get_host, host.host_id)
            if current is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "attestation.unknown_host: removed")
            host = current
            reference = await asyncio.to_thread(self._store.get_reference, host.group)
            challenge = self._registry.issue(
                host.host_id,
                challenge_selection(self._config.pcr_selection, reference),
                ttl_seconds=self._config.challenge_timeout_seconds,
            )
            yield attestation_pb2.VerifierMessage(challenge=self._challenge_message(challenge))
            try:
                message = await asyncio.wait_for(
                    anext(request_iterator), self._config.challenge_timeout_seconds
                )
            except (TimeoutError, StopAsyncIteration):
                self._registry.discard(challenge.challenge_id)
                log.warning("no evidence before the deadline host=%s", host.host_id)
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "attestation.evidence_timeout: no evidence for the challenge in time",
                )
            if message.WhichOneof("body") != "evidence":
                self._registry.discard(challenge.challenge_id)
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "expected evidence answering the challenge"
                )
            outcome = await asyncio.to_thread(
                self._appraise, host, challenge, message.evidence, reference
            )
            appraised_at = self._now()
            record = await asyncio.to_thread(
                self._store.record_attestation,
                host_id=host.host_id,
                challenge_id=challenge.challenge_id,
                verdict=outcome.verdict,
                appraised_at=appraised_at,
                clock=outcome.clock,
                boot_event=outcome.boot_event,
            )
            self._log_verdict(host.host_id, outcome.verdict)
            yield attestation_pb2.VerifierMessage(
                verdict=verdict_message(
                    outcome.verdict,
                    host_id=host.host_id,
                    appraised_at=appraised_at,
                    result_id=record.result_id,
                )
            )
            await asyncio.sleep(self._config.attestation_interval_seconds)

    async def _hello(
        self,
        request_iterator: AsyncIterator[attestation_pb2.AgentMessage],
        context: AttestContext,
    ) -> HostRecord:
        try:
            first = await asyncio.wait_for(anext(request_iterator), HELLO_TIMEOUT_SECONDS)
        except (TimeoutError, StopAsyncIteration):
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "expected a hello first")
        if first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
        hello = first.hello
        if not IDENTIFIER.fullmatch(hello.host_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello.host_id: not a valid id")
        host = await asyncio.to_thread(self._store.get_host, hello.host_id)
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

    def _appraise(
        self,
        host: HostRecord,
        challenge: IssuedChallenge,
        evidence: attestation_pb2.Evidence,
        reference: ReferenceSet | None,
    ) -> Outcome:
        try:
            redeemed = self._registry.redeem(host.host_id, evidence.challenge_id)
        except ChallengeError as exc:
            self._registry.discard(challenge.challenge_id)
            return Outcome(Verdict.contraindicated((exc.reason,), ()), None, None)
        return evaluate(
            host=host,
            challenge=redeemed,
            evidence=evidence,
            reference=reference,
            consumed_qualifying_data=self._registry.consumed_qualifying_data(host.host_id),
            allow_sha1_signatures=self._config.allow_sha1_signatures,
        )

    def _challenge_message(self, challenge: IssuedChallenge) -> attestation_pb2.Challenge:
        selection = [
            common_pb2.PcrSelection(hash_algorithm=bank, pcrs=list(pcrs))
            for bank, pcrs in challenge.pcr_selection.items()
        ]
        return attestation_pb2.Challenge(
            challenge_id=challenge.challenge_id,
            nonce=challenge.nonce,
            tpm=attestation_pb2.TpmQuoteRequest(
                qualifying_data=challenge.tpm_qualifying_data, pcr_selection=selection
            ),
            expires_in_seconds=int(self._config.challenge_timeout_seconds),
        )

    @staticmethod
    def _log_verdict(host_id: str, verdict: Verdict) -> None:
        codes = ",".join(verdict.reason_codes()) or "-"
        log.info("verdict host=%s tier=%s reasons=%s", host_id, verdict.tier.value, codes)
