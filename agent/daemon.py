"""The agent daemon: enroll the AK once, then hold the attestation stream open.

The verifier drives the stream: it sends challenges, the agent answers each with
a TPM quote (and, when asked, a certification of its binding key), the verifier
sends a verdict. Key release messages on the same stream are handed to
``agent.release_manager``, whose slow work runs in background tasks. TPM work runs
in worker threads, one operation at a time (``agent.tpmwork``), so the event loop
serving gRPC never blocks on the TPM. Writes to the stream are serialized by one
lock per stream. Any failure closes the channel and retries after an exponential
backoff with full jitter, reset by a verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from functools import partial
from importlib import metadata
from typing import Any

import grpc
import grpc.aio

from agent.backoff import Backoff
from agent.binding import ensure_certified_binding_key
from agent.collectors.boot_log import read_boot_log
from agent.collectors.gpu_evidence import BoundedGpuCollector
from agent.collectors.ima_log import read_ima_log
from agent.collectors.snp import BoundedSnpCollector
from agent.collectors.tdx import BoundedTdxCollector
from agent.collectors.tpm import Tpm, TpmError, ak_name
from agent.config import AgentConfig, load_verifier_signing_key
from agent.enrollment_state import EnrollmentState, delete_state, load_state, save_state
from agent.logs import EventLog
from agent.release_manager import ReleaseManager
from agent.tpmwork import TpmWorker
from weightgate.v1 import (
    attestation_pb2,
    attestation_pb2_grpc,
    common_pb2,
    enrollment_pb2,
    enrollment_pb2_grpc,
)

_RPC_TIMEOUT_S = 30.0  # unary enrollment calls; the stream itself has no deadline
# The verifier's gRPC server refuses pings more often than every 5 minutes by default.
_KEEPALIVE_MS = 300_000


def agent_version() -> str:
    try:
        return metadata.version("weightgate")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class EnrollmentError(Exception):
    """The verifier answered enrollment with something we cannot accept."""


class EnrollmentUnknownError(Exception):
    """The verifier does not know our enrollment (FAILED_PRECONDITION on Hello)."""


def open_channel(config: AgentConfig) -> grpc.aio.Channel:
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", _KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]
    if config.insecure:
        return grpc.aio.insecure_channel(config.verifier, options=options)
    tls = config.tls
    if tls is None:  # load_config guarantees this; keep mypy and a future caller honest
        raise ValueError("TLS settings are required unless insecure")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_certificate.read_bytes(),
        private_key=tls.private_key.read_bytes(),
        certificate_chain=tls.certificate.read_bytes(),
    )
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(config.verifier, credentials, options=options)


class StreamSender:
    """Serializes writes to one attestation stream: the stream loop and background
    release tasks both write to it, and grpc.aio allows one write at a time."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._lock = asyncio.Lock()

    async def send(self, message: attestation_pb2.AgentMessage) -> None:
        async with self._lock:
            await self._call.write(message)


class Agent:
    """Runs until ``stop`` is set: ``await Agent(config).run(stop)``."""

    def __init__(self, config: AgentConfig, *, tpm: Tpm | None = None) -> None:
        self._config = config
        self._gpus = BoundedGpuCollector(
            source=config.gpu_evidence,
            simulator_dir=config.gpu_simulator,
            timeout_seconds=config.gpu_timeout_seconds,
        )
        self._snp = BoundedSnpCollector(
            source=config.snp_evidence,
            tsm_dir=config.snp_tsm_dir,
            simulator_dir=config.snp_simulator,
        )
        self._tdx = BoundedTdxCollector(
            source=config.tdx_evidence,
            tsm_dir=config.snp_tsm_dir,  # configfs-tsm's one report directory
            simulator_dir=config.tdx_simulator,
        )
        self._tpm = tpm or Tpm(config.tcti)
        self._worker = TpmWorker(self._tpm)
        self._log = EventLog(config.host_id)
        self._backoff = Backoff(
            initial_seconds=config.reconnect_initial_seconds,
            max_seconds=config.reconnect_max_seconds,
        )
        signing_key = None
        if config.verifier_signing_key is not None:
            signing_key = load_verifier_signing_key(config.verifier_signing_key)
        self._releases = ReleaseManager(
            config,
            tpm=self._worker,
            log=self._log,
            channels=partial(open_channel, config),
            signing_key=signing_key,
        )

    async def run(self, stop: asyncio.Event) -> None:
        self._log.info("agent.started", verifier=self._config.verifier, version=agent_version())
        # Expired leases are erased before anything else, even with no verifier in reach.
        await self._releases.start()
        serve = asyncio.create_task(self._serve_forever())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({serve, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (serve, stopped):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serve
            await self._releases.close()
            self._log.info("agent.stopped")

    async def enroll_once(self) -> EnrollmentState:
        """Enroll now (even if already enrolled); one attempt, errors propagate."""
        async with open_channel(self._config) as channel:
            ak_public = await self._worker.call(self._tpm.ensure_ak, self._config.ak_handle)
            return await self._enroll(channel, ak_public)

    async def _serve_forever(self) -> None:
        while True:
            try:
                async with open_channel(self._config) as channel:
                    state = await self._ensure_enrolled(channel)
                    await self._attest(channel, state)
                self._log.warning("attest.stream_closed")
            except EnrollmentUnknownError as e:
                self._log.warning("enrollment.rejected", detail=str(e))
                delete_state(self._config.state_dir)
            except grpc.aio.AioRpcError as e:
                self._log.warning("rpc.failed", code=e.code().name, detail=e.details() or "")
            except (TpmError, EnrollmentError, asyncio.InvalidStateError) as e:
                self._log.error("agent.error", kind=type(e).__name__, detail=str(e))
            delay = self._backoff.next_delay()
            self._log.info("agent.retry", delay_seconds=round(delay, 3))
            await asyncio.sleep(delay)

    async def _ensure_enrolled(self, channel: grpc.aio.Channel) -> EnrollmentState:
        cfg = self._config
        ak_public = await self._worker.call(self._tpm.ensure_ak, cfg.ak_handle)
        state = load_state(cfg.state_dir)
        expected = EnrollmentState(
            host_id=cfg.host_id,
            verifier=cfg.verifier,
            ak_name=ak_name(ak_public),
            ak_handle=cfg.ak_handle,
        )
        if state == expected:
            return state
        if state is not None:
            self._log.info("enrollment.stale", saved_ak_name=state.ak_name.hex())
        return await self._enroll(channel, ak_public)

    async def _enroll(self, channel: grpc.aio.Channel, ak_public: bytes) -> EnrollmentState:
        cfg = self._config
        name = ak_name(ak_public)
        self._log.info("enrollment.begin", ak_name=name.hex())
        endorsement = await self._worker.call(self._tpm.read_endorsement)
        stub = enrollment_pb2_grpc.EnrollmentStub(channel)
        begin = await stub.BeginEnrollment(
            enrollment_pb2.BeginEnrollmentRequest(
                host_id=cfg.host_id,
                ek_public=endorsement.ek_public,
                ek_certificate=endorsement.ek_certificate,
                ak_public=ak_public,
            ),
            timeout=_RPC_TIMEOUT_S,
        )
        secret = await self._worker.call(
            partial(
                self._tpm.activate_credential,
                ak_handle=cfg.ak_handle,
                credential_blob=begin.credential_blob,
                encrypted_secret=begin.encrypted_secret,
            )
        )
        done = await stub.CompleteEnrollment(
            enrollment_pb2.CompleteEnrollmentRequest(
                enrollment_id=begin.enrollment_id, activated_secret=secret
            ),
            timeout=_RPC_TIMEOUT_S,
        )
        if done.ak_name != name:
            raise EnrollmentError(
                f"verifier enrolled AK {done.ak_name.hex()}, ours is {name.hex()}"
            )
        state = EnrollmentState(
            host_id=cfg.host_id, verifier=cfg.verifier, ak_name=name, ak_handle=cfg.ak_handle
        )
        save_state(cfg.state_dir, state)
        self._log.info("enrollment.completed", ak_name=name.hex())
        return state

    async def _attest(self, channel: grpc.aio.Channel, state: EnrollmentState) -> None:
        stub = attestation_pb2_grpc.AttestationStub(channel)
        call = stub.Attest()
        sender = StreamSender(call)
        self._releases.stream_opened()
        try:
            await sender.send(
                attestation_pb2.AgentMessage(
                    hello=attestation_pb2.Hello(
                        host_id=state.host_id,
                        ak_name=state.ak_name,
                        agent_version=agent_version(),
                    )
                )
            )
            self._log.info("attest.hello_sent", ak_name=state.ak_name.hex())
            while True:
                message = await call.read()
                if not isinstance(message, attestation_pb2.VerifierMessage):
                    return  # grpc.aio.EOF: the verifier closed the stream
                body = message.WhichOneof("body")
                if body == "challenge":
                    evidence = await self._evidence(message.challenge)
                    await sender.send(attestation_pb2.AgentMessage(evidence=evidence))
                    self._log.info("attest.evidence_sent", challenge_id=evidence.challenge_id)
                elif body == "verdict":
                    verdict = message.verdict
                    self._log.info(
                        "attest.verdict",
                        tier=common_pb2.Tier.Name(verdict.tier),
                        reasons=[r.code for r in verdict.reasons],
                        result_id=verdict.result_id,
                    )
                    self._backoff.reset()
                    await self._releases.on_verdict(verdict.tier, sender)
                elif body == "key_release":
                    self._releases.on_key_release(message.key_release)
                elif body == "release_denied":
                    self._releases.on_denied(message.release_denied)
                elif body == "lease_renewal":
                    self._releases.on_renewal(message.lease_renewal)
                elif body == "revocation":
                    self._releases.on_revocation(message.revocation, sender)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise EnrollmentUnknownError(e.details() or "") from e
            raise
        finally:
            call.cancel()

    async def _evidence(self, challenge: attestation_pb2.Challenge) -> attestation_pb2.Evidence:
        evidence = attestation_pb2.Evidence(challenge_id=challenge.challenge_id)
        if challenge.HasField("binding_key"):
            await self._certify_binding_key(challenge.binding_key, evidence)
        if challenge.want_boot_log:
            boot_log = await asyncio.to_thread(read_boot_log, self._config.event_log_path)
            evidence.boot_log.CopyFrom(boot_log)
        if not challenge.HasField("tpm"):
            return evidence
        quote = await self._quote(challenge)
        evidence.tpm.CopyFrom(quote)
        if challenge.HasField("ima"):
            # Read after quoting: the list can only have grown, and the verifier
            # accepts the prefix that replays to the quoted PCR10.
            ima = await asyncio.to_thread(
                read_ima_log, self._config.ima_log_path, challenge.ima.from_entry
            )
            evidence.ima.CopyFrom(ima)
        if challenge.HasField("gpu"):
            # After quoting: each GPU's nonce is derived from the quote's bytes.
            gpu = await self._gpus.collect(
                challenge_nonce=bytes(challenge.nonce), tpm_attest=bytes(quote.attest)
            )
            evidence.gpu.CopyFrom(gpu)
        bound = {"challenge_nonce": bytes(challenge.nonce), "tpm_attest": bytes(quote.attest)}
        if challenge.HasField("snp"):
            evidence.snp.CopyFrom(await self._snp.collect_for_quote(**bound))
        if challenge.HasField("tdx"):
            evidence.tdx.CopyFrom(await self._tdx.collect_for_quote(**bound))
        return evidence

    async def _quote(self, challenge: attestation_pb2.Challenge) -> attestation_pb2.TpmQuote:
        selection: dict[str, list[int]] = {}
        for sel in challenge.tpm.pcr_selection:
            selection.setdefault(sel.hash_algorithm, []).extend(sel.pcrs)
        # One quote covers every requested bank; the verifier reads the banks and their
        # order from the quote's own pcrSelect.
        quote = await self._worker.call(
            partial(
                self._tpm.quote,
                ak_handle=self._config.ak_handle,
                qualifying_data=bytes(challenge.tpm.qualifying_data),
                selection=selection,
            )
        )
        return attestation_pb2.TpmQuote(
            attest=quote.attest,
            signature=quote.signature,
            pcrs=[
                common_pb2.PcrBank(hash_algorithm=bank, values=values)
                for bank, values in quote.pcrs.items()
            ],
        )

    async def _certify_binding_key(
        self, request: attestation_pb2.BindingKeyRequest, evidence: attestation_pb2.Evidence
    ) -> None:
        selection: dict[str, list[int]] = {}
        for sel in request.pcr_selection:
            selection.setdefault(sel.hash_algorithm, []).extend(sel.pcrs)
        certified = await self._worker.call(
            partial(
                ensure_certified_binding_key,
                self._tpm,
                self._config.state_dir,
                pcr_selection=selection,
                ak_handle=self._config.ak_handle,
                qualifying_data=bytes(request.qualifying_data),
            )
        )
        evidence.binding_key.CopyFrom(
            attestation_pb2.BindingKeyCertification(
                public=certified.key.public,
                attest=certified.certification.attest,
                signature=certified.certification.signature,
            )
        )
        self._releases.binding_key_certified()
        self._log.info(
            "binding_key.certified",
            created=certified.created,
            pcr_selection={b: list(i) for b, i in certified.key.pcr_selection.items()},
        )


def run_agent(config: AgentConfig) -> int:
    """Blocking entry point: run until SIGTERM or SIGINT, then return 0."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Agent(config).run(stop)

    asyncio.run(main())
    return 0
