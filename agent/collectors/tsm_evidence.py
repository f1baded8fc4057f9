"""What the SEV-SNP and TDX collectors share: where a configfs-tsm report comes from.

Either source answers as the kernel would: configfs-tsm itself ("tsm"), or a
devsim guest ("simulator", for tests and demos), or nothing ("off"). Source "tsm"
falls back to the platform's device ioctl (/dev/sev-guest, /dev/tdx_guest) only
where configfs-tsm's directory does not exist (older kernels); any other
configfs-tsm failure is the answer, so a working configfs-tsm is never bypassed.
Whatever could not be collected comes back as a :class:`TsmUnavailable` reason,
never an exception.
"""

from __future__ import annotations

import errno
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Literal, TypeVar

from agent.collectors.bounded import BoundedCollector
from agent.collectors.snp_tsm import ConfigfsTsm, TsmProvider, TsmReport, TsmUnavailable, tsm_report
from agent.config_devices import DEFAULT_SNP_TSM_DIR

__all__ = ["BoundedTsmCollector", "TsmDevice", "TsmSource", "simulated_tsm_report", "tsm_evidence"]

REPORT_DATA_SIZE = 64
Guest = TypeVar("Guest")
Message = TypeVar("Message")
TsmSource = Literal["tsm", "off", "simulator"]  # SnpSource and TdxSource alike


@dataclass(frozen=True)
class TsmDevice:
    """One configfs-tsm platform as the agent collects it."""

    name: str  # "SNP", "TDX": names the reasons; in lower case, the config keys
    provider: TsmProvider
    # The simulated guest (``directory``, ``report_data``): a function that imports
    # devsim only when called, so a real agent never loads the simulators.
    simulated: Callable[[Path, bytes], TsmReport | TsmUnavailable]
    # Where configfs-tsm's directory is absent: the device ioctl's answer over
    # ``report_data`` (None: no fallback).
    fallback: Callable[[bytes], TsmReport | TsmUnavailable] | None = None


def _absent(directory: Path) -> bool:
    """Whether ``directory`` does not exist (ENOENT); any other answer is no absence."""
    try:
        os.stat(directory)
    except OSError as exc:
        return exc.errno == errno.ENOENT
    return False


def tsm_evidence(
    device: TsmDevice,
    *,
    source: TsmSource,
    tsm_dir: Path | None,
    simulator_dir: Path | None,
    report_data: bytes,
) -> TsmReport | TsmUnavailable:
    """``device``'s report over ``report_data`` from ``source``, or why not (blocking).

    ``tsm_dir``: configfs-tsm's report directory for source "tsm" (None: the
    kernel's default); ``simulator_dir``: the devsim guest for "simulator".
    """
    key = device.name.lower()
    try:
        report_data = bytes(report_data)
        if source == "off":
            return TsmUnavailable(
                f'{device.name} evidence is switched off on this agent ({key}_evidence = "off")'
            )
        if source == "simulator":
            if simulator_dir is None:  # the config loader refuses this; kept fail-closed
                return TsmUnavailable(
                    f"{key}_evidence = simulator without {key}_simulator directory"
                )
            return device.simulated(simulator_dir, report_data)
        root = tsm_dir or DEFAULT_SNP_TSM_DIR
        absent = _absent(root)  # before the attempt: its failure must not be mistaken
        got = tsm_report(ConfigfsTsm(root), report_data, provider=device.provider)
        if (
            not isinstance(got, TsmUnavailable)
            or device.fallback is None
            or not absent
            or len(report_data) != REPORT_DATA_SIZE  # the reason is the length, not the directory
        ):
            return got
        fallback = device.fallback(report_data)
        if isinstance(fallback, TsmUnavailable):
            return TsmUnavailable(f"{got.reason}; {fallback.reason}")
        return fallback
    except (OSError, ValueError) as exc:  # a path the kernel refused oddly; never out
        return TsmUnavailable(f"{device.name} collection failed: {exc}")


def simulated_tsm_report(
    report_data: bytes,
    *,
    field: str,
    what: str,
    load: Callable[[], Guest],
    error: type[Exception],
    answer: Callable[[Guest], TsmReport],
) -> TsmReport | TsmUnavailable:
    """A simulated guest's answer over ``report_data`` (never raises for it).

    ``field`` names report_data in the reason ("REPORT_DATA"), ``what`` the guest
    ("simulated SNP host"); ``load`` loads it, raising ``error`` where it cannot,
    and ``answer`` asks it for the report.
    """
    if len(report_data) != REPORT_DATA_SIZE:
        return TsmUnavailable(f"{field} of {len(report_data)} bytes, not {REPORT_DATA_SIZE}")
    try:
        guest = load()
    except error as exc:
        return TsmUnavailable(f"{what} unavailable: {exc}")
    return answer(guest)


class BoundedTsmCollector(ABC, Generic[Message]):
    """One configfs-tsm request at a time, each given at most ``timeout_seconds``.

    Reading configfs-tsm's outblob blocks in the kernel until the firmware or the
    quoting enclave answers, and a thread cannot be interrupted: see
    :class:`agent.collectors.bounded.BoundedCollector`. A subclass names the request
    (``WHAT``), what a stuck one waits on (``STUCK``), the default timeout, and how
    its message is made.
    """

    WHAT: ClassVar[str]
    STUCK: ClassVar[str]
    TIMEOUT_SECONDS: ClassVar[float]
    NONE: ClassVar[str]  # "no SNP report": the start of why there is none

    def __init__(
        self,
        *,
        source: TsmSource,
        tsm_dir: Path,
        simulator_dir: Path | None,
        timeout_seconds: float | None = None,
    ) -> None:
        self._source, self._tsm_dir, self._simulator_dir = source, tsm_dir, simulator_dir
        self._bounded = BoundedCollector(
            timeout_seconds=self.TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds,
            unavailable=self._unavailable,
            what=self.WHAT,
            stuck=self.STUCK,
        )

    async def collect(self, *, report_data: bytes) -> Message:
        return await self._bounded.run(
            self._evidence,
            source=self._source,
            tsm_dir=self._tsm_dir,
            simulator_dir=self._simulator_dir,
            report_data=report_data,
        )

    async def collect_for_quote(self, *, challenge_nonce: bytes, tpm_attest: bytes) -> Message:
        """A report whose report data binds the challenge nonce and this round's quote
        bytes (so it is asked for after quoting); an empty input is answered, not raised."""
        try:
            report_data = self._report_data(challenge_nonce, tpm_attest)
        except ValueError as exc:  # an empty nonce: nothing to bind the report to
            return self._unavailable(f"{self.NONE}: {exc}")
        return await self.collect(report_data=report_data)

    @abstractmethod
    def _report_data(self, challenge_nonce: bytes, tpm_attest: bytes) -> bytes:
        """The weightgate.cvm_binding derivation for this kind of report."""

    @abstractmethod
    def _evidence(
        self, *, source: TsmSource, tsm_dir: Path, simulator_dir: Path | None, report_data: bytes
    ) -> Message:
        """The message over ``report_data`` (blocking: it runs in the worker thread)."""

    @abstractmethod
    def _unavailable(self, reason: str) -> Message:
        """The message that says why there is no evidence."""
