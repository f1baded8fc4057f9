"""Assemble and run the verifier's gRPC server (grpc.aio)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from verifier.challenges import ChallengeRegistry
from verifier.config import VerifierConfig
from verifier.enrollment import Enroller
from verifier.server.attestation_service import AttestationService
from verifier.server.enrollment_service import EnrollmentService
from verifier.server.operator_service import OperatorService
from verifier.store import Store
from verifier.x509chain import load_pem_certificates
from weightgate.v1 import attestation_pb2_grpc, enrollment_pb2_grpc, operator_pb2_grpc

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

    async def stop(self) -> None:
        await self.server.stop(SHUTDOWN_GRACE_SECONDS)
        self.store.close()


def _credentials(config: VerifierConfig) -> grpc.ServerCredentials | None:
    if config.tls is None:
        return None
    return grpc.ssl_server_credentials(
        [(config.tls.private_key.read_bytes(), config.tls.certificate.read_bytes())],
        root_certificates=config.tls.client_ca.read_bytes(),
        require_client_auth=True,
    )


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
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    enrollment_pb2_grpc.add_EnrollmentServicer_to_server(EnrollmentService(enroller), server)
    attestation_pb2_grpc.add_AttestationServicer_to_server(
        AttestationService(store, ChallengeRegistry(), config, now=now), server
    )
    operator_pb2_grpc.add_OperatorServicer_to_server(OperatorService(store, now=now), server)
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
    return RunningVerifier(server, port, store)


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
