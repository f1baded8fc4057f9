"""A real verifier (grpc.aio) on a loopback port, in a background event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import grpc

from verifier.config import VerifierConfig, config_for_demo
from verifier.server.app import RunningVerifier, start_verifier
from verifier.server.host_watch import HostWatchHub
from weightgate.v1 import (
    attestation_pb2_grpc,
    enrollment_pb2_grpc,
    operator_pb2_grpc,
)

T = TypeVar("T")


class VerifierHarness:
    def __init__(self, config: VerifierConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._running: RunningVerifier = asyncio.run_coroutine_threadsafe(
            start_verifier(config), self._loop
        ).result(timeout=60)
        self.address = f"127.0.0.1:{self._running.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.operator = operator_pb2_grpc.OperatorStub(self.channel)
        self.enrollment = enrollment_pb2_grpc.EnrollmentStub(self.channel)
        self.attestation = attestation_pb2_grpc.AttestationStub(self.channel)

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self._running.store

    @property
    def host_watch(self) -> HostWatchHub:
        return self._running.host_watch

    def in_loop(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the verifier's event loop (where the host-watch hub lives)."""

        async def call() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=30)

    def stop(self) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self._running.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@contextmanager
def running_verifier(
    state_dir: Path, *, ek_ca_certificates: tuple[Path, ...], **overrides: object
) -> Iterator[VerifierHarness]:
    config = config_for_demo(state_dir, ek_ca_certificates=ek_ca_certificates)
    settings: dict[str, object] = {"attestation_interval_seconds": 0.05, **overrides}
    config = replace(config, **settings)  # type: ignore[arg-type]
    harness = VerifierHarness(config)
    try:
        yield harness
    finally:
        harness.stop()


class InsecureCli:
    """`weightgate ARGV --verifier ADDRESS --insecure` in-process: (exit code, stdout, stderr)."""

    def __init__(self, verifier: VerifierHarness, capsys: Any) -> None:
        self._address = verifier.address
        self._capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        from verifier.cli import main  # noqa: PLC0415 - only the CLI tests need it

        self._capsys.readouterr()
        code = main([*argv, "--verifier", self._address, "--insecure"])
        out, err = self._capsys.readouterr()
        return code, out, err
