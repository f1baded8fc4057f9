"""Assemble and run the verifier's gRPC server (grpc.aio)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from verifier.audit.recorder import AuditRecorder
from verifier.authz import Authorizer
from verifier.challenges import ChallengeRegistry
from verifier.config import VerifierConfig
from verifier.enrollment import Enroller
from verifier.evidence.nvidia.host_round import GpuVerifier
from verifier.evidence.snp.host_round import SnpVerifier
from verifier.evidence.tdx.host_round import TdxVerifier
from verifier.evidence.tpm import ima_native
from verifier.keystore import FileKeyStore, KeyStoreError
from verifier.revocation import ClientRevocationList
from verifier.server.attestation_service import AttestationService, OpenStreams
from verifier.server.audit_signer import sign_checkpoints_periodically
from verifier.server.enrollment_service import EnrollmentService
from verifier.server.host_stream import StreamDeps
from verifier.server.host_watch import HostWatchHub
from verifier.server.operator_service import OperatorService
from verifier.server.release_desk import ReleaseDesk
from verifier.server.weights_service import WeightsService
from verifier.store import Store
from verifier.x509chain import load_pem_certificates
from weightgate.v1 import (
    attestation_pb2_grpc,
    enrollment_pb2_grpc,
    operator_pb2_grpc,
    weights_pb2_grpc,
)

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0
# Bounds what one message can make us allocate; evidence with event logs fits easily.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunningVerifier:
    server: grpc.aio.Server
    port: int
    store: Store
    sweeper: asyncio.Task[None]
    checkpointer: asyncio.Task[None]  # signs audit checkpoints (verifier.server.audit_signer)
    host_watch: HostWatchHub  # live host changes for WatchHosts

    async def stop(self) -> None:
        for task in (self.sweeper, self.checkpointer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Watch streams never end by themselves: end them (UNAVAILABLE, "reconnect")
        # rather than have the server wait out its grace period and cancel them.
        self.host_watch.close()
        await self.server.stop(SHUTDOWN_GRACE_SECONDS)
        self.store.close()


async def sweep_expired_leases(
    store: Store, open_streams: OpenStreams, *, now: Callable[[], datetime], period: float
) -> None:
    """Expire overdue leases for every host in one place, and wake the hosts' open
    streams so they ask for erase receipts at once."""
    while True:
        try:
            expired = await asyncio.to_thread(store.expire_releases, now=now())
        except Exception:  # a failed sweep must not end the sweeping
            log.exception("lease sweep failed")
            expired = []
        for host_id in {release.host_id for release in expired}:
            open_streams.wake(host_id)
        await asyncio.sleep(period)


def open_keystore(config: VerifierConfig) -> FileKeyStore:
    """Open the key store, creating it (0600, never overwriting) on first start."""
    if config.keystore.exists():
        return FileKeyStore.open(config.keystore)
    config.keystore.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    log.info("creating a new key store at %s", config.keystore)
    try:
        return FileKeyStore.create(config.keystore)
    except KeyStoreError:
        # Another process created it between our check and our create.
        return FileKeyStore.open(config.keystore)


def _credentials(config: VerifierConfig) -> grpc.ServerCredentials | None:
    if config.tls is None:
        return None
    return grpc.ssl_server_credentials(
        [(config.tls.private_key.read_bytes(), config.tls.certificate.read_bytes())],
        root_certificates=config.tls.client_ca.read_bytes(),
        require_client_auth=True,
    )


def _revocations(
    config: VerifierConfig, now: Callable[[], datetime]
) -> ClientRevocationList | None:
    if config.tls is None or config.tls.client_crl is None:
        return None
    crl = ClientRevocationList(config.tls.client_crl, config.tls.client_ca, now=now)
    log.info("revocation: %s", crl.describe())  # what it holds, or why every call is refused
    return crl


async def start_verifier(
    config: VerifierConfig,
    *,
    store: Store | None = None,
    now: Callable[[], datetime] = utc_now,
) -> RunningVerifier:
    """Open the store, bind the port and start serving; returns once listening."""
    if store is None:
        store = await asyncio.to_thread(Store.open, config.database_url)
    enroller = Enroller(
        store,
        ek_roots=load_pem_certificates(config.ek_ca_certificates),
        require_ek_certificate=config.require_ek_certificate,
        timeout=timedelta(seconds=config.enrollment_timeout_seconds),
        now=now,
        allow_shared_tpm=config.allow_shared_tpm,
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    keystore = await asyncio.to_thread(open_keystore, config)
    config.blob_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    open_streams = OpenStreams()
    host_watch = HostWatchHub()
    deps = StreamDeps(
        store=store,
        challenges=ChallengeRegistry(),
        config=config,
        desk=ReleaseDesk(store=store, keystore=keystore, config=config, now=now),
        now=now,
        host_watch=host_watch,
        gpu_verifier=None if config.nvidia is None else GpuVerifier(config.nvidia),
        snp_verifier=None if config.snp is None else SnpVerifier(config.snp),
        tdx_verifier=None if config.tdx is None else TdxVerifier(config.tdx),
    )
    if config.insecure:
        log.warning(
            "INSECURE: plaintext gRPC without client certificates; every caller gets every "
            "role and may act as any host. For demos and tests only, never in production."
        )
    audit = AuditRecorder(store, insecure=config.insecure, now=now)
    authz = Authorizer(insecure=config.insecure, audit=audit, revocations=_revocations(config, now))
    enrollment_pb2_grpc.add_EnrollmentServicer_to_server(
        EnrollmentService(enroller, authz=authz, host_watch=host_watch), server
    )
    attestation_pb2_grpc.add_AttestationServicer_to_server(
        AttestationService(deps, open_streams, authz=authz), server
    )
    operator_pb2_grpc.add_OperatorServicer_to_server(
        OperatorService(
            store,
            now=now,
            keystore=keystore,
            blob_dir=config.blob_dir,
            open_streams=open_streams,
            review_valid_days=config.review_valid_days,
            approvals=config.approvals,
            audit=audit,
            authz=authz,
            host_watch=host_watch,
        ),
        server,
    )
    weights_pb2_grpc.add_WeightsServicer_to_server(
        WeightsService(store, config.blob_dir, authz=authz), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    credentials = _credentials(config)
    if credentials is None:
        port = server.add_insecure_port(config.listen)
    else:
        port = server.add_secure_port(config.listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("verifier listening on port %d (%s)", port, "plaintext" if config.insecure else "mTLS")
    if not ima_native.active():  # same verdicts, several times slower on IMA lists
        log.warning("IMA lists are checked without the C path (not built, or disabled)")
    # Lease expiry is noticed within a quarter lease (at most 10 s, at least 0.5 s).
    period = max(0.5, min(config.lease_seconds / 4, 10.0))
    sweeper = asyncio.create_task(sweep_expired_leases(store, open_streams, now=now, period=period))
    checkpointer = asyncio.create_task(
        sign_checkpoints_periodically(
            store, keystore, now=now, period=config.audit_checkpoint_interval_seconds
        )
    )
    return RunningVerifier(server, port, store, sweeper, checkpointer, host_watch)


async def serve(config: VerifierConfig, *, on_ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then stop gracefully (in-flight RPCs get a grace period)."""
    running = await start_verifier(config)
    if on_ready is not None:
        on_ready(running.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down")
    await running.stop()
