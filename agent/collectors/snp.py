"""The SnpEvidence answer to a challenge's SnpRequest: from configfs-tsm or the simulator.

The report is requested over REPORT_DATA = :func:`weightgate.cvm_binding.snp_report_data`
(the challenge nonce and this round's quote bytes, the derivation the verifier
repeats), so the collection runs after the quote. Report and certificates go into
the message untouched (DER certificates are only PEM-armored for ``cert_chain``);
whatever could not be collected is said in ``unavailable``, never silently left
out, and no exception leaves the collector.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.collectors.snp_certtable import CertTableError, der_to_pem, parse_cert_table
from agent.collectors.snp_tsm import ConfigfsTsm, TsmReport, TsmUnavailable, tsm_report
from agent.config_devices import DEFAULT_SNP_TSM_DIR, SnpSource
from weightgate.v1 import attestation_pb2

__all__ = ["SNP_TIMEOUT_SECONDS", "BoundedSnpCollector", "snp_evidence_message"]

# The firmware answers in milliseconds, but the request goes through the
# hypervisor, which may throttle it (the kernel keeps retrying a throttled request
# for up to a minute). Past this the round answers "unavailable" instead.
SNP_TIMEOUT_SECONDS = 30.0
_FLAGS_OFFSET = 0x048  # the report's flags word: SIGNING_KEY in bits 4:2
_SIGNING_KEY_VCEK, _SIGNING_KEY_VLEK = 0, 1


def _collect(
    source: SnpSource, tsm_dir: Path | None, simulator_dir: Path | None, report_data: bytes
) -> TsmReport | TsmUnavailable:
    if source == "off":
        return TsmUnavailable('SNP evidence is switched off on this agent (snp_evidence = "off")')
    if source == "simulator":
        from agent.collectors.snp_simulated import simulated_snp_report  # noqa: PLC0415

        if simulator_dir is None:  # the config loader refuses this; kept fail-closed
            return TsmUnavailable("snp_evidence = simulator without snp_simulator directory")
        return simulated_snp_report(simulator_dir, report_data)
    return tsm_report(ConfigfsTsm(tsm_dir or DEFAULT_SNP_TSM_DIR), report_data)


def _message(got: TsmReport) -> attestation_pb2.SnpEvidence:
    message = attestation_pb2.SnpEvidence(report=got.report)
    if not got.auxblob:
        return message  # the host supplied no certificates; the verifier must have them
    try:
        table = parse_cert_table(got.auxblob)
    except CertTableError as exc:
        return attestation_pb2.SnpEvidence(unavailable=f"configfs-tsm auxblob: {exc}")
    signing_key = (got.report[_FLAGS_OFFSET] >> 2) & 0b111
    # The key the report names; otherwise whichever the host gave (the verifier
    # then names the mismatch).
    named, other = (
        (table.vlek, table.vcek) if signing_key == _SIGNING_KEY_VLEK else (table.vcek, table.vlek)
    )
    key = named or other
    if key is not None:
        message.vcek = key
    message.cert_chain = b"".join(der_to_pem(c) for c in (table.ask, table.ark) if c)
    return message


def snp_evidence_message(
    *,
    source: SnpSource,
    tsm_dir: Path | None,
    simulator_dir: Path | None,
    report_data: bytes,
) -> attestation_pb2.SnpEvidence:
    """This round's SNP evidence over ``report_data`` (blocking: run it in a thread).

    ``tsm_dir``: configfs-tsm's report directory for source "tsm" (None: the
    kernel's default); ``simulator_dir``: the devsim.snp host for "simulator".
    """
    try:
        got = _collect(source, tsm_dir, simulator_dir, bytes(report_data))
    except (OSError, ValueError) as exc:  # a path the kernel refused oddly; never out
        return attestation_pb2.SnpEvidence(unavailable=f"SNP collection failed: {exc}")
    if isinstance(got, TsmUnavailable):
        return attestation_pb2.SnpEvidence(unavailable=got.reason)
    return _message(got)


class BoundedSnpCollector:
    """One collection at a time, each given at most ``timeout_seconds``.

    Reading configfs-tsm's outblob blocks in the kernel until the firmware (via
    the hypervisor) answers, and a thread cannot be interrupted: so the collection
    runs in a worker thread, the round waits at most ``timeout_seconds`` and then
    answers "unavailable", and while that thread has not returned, later rounds
    answer "unavailable" at once instead of stacking more threads on a stuck request.
    """

    def __init__(
        self,
        *,
        source: SnpSource,
        tsm_dir: Path,
        simulator_dir: Path | None,
        timeout_seconds: float = SNP_TIMEOUT_SECONDS,
    ) -> None:
        self._source, self._tsm_dir, self._simulator_dir = source, tsm_dir, simulator_dir
        self._timeout = timeout_seconds
        self._in_flight: asyncio.Future[attestation_pb2.SnpEvidence] | None = None

    async def collect(self, *, report_data: bytes) -> attestation_pb2.SnpEvidence:
        if self._in_flight is not None and not self._in_flight.done():
            return attestation_pb2.SnpEvidence(
                unavailable="the previous SNP report request has not returned (firmware or "
                "hypervisor not answering)"
            )
        work = asyncio.ensure_future(
            asyncio.to_thread(
                snp_evidence_message,
                source=self._source,
                tsm_dir=self._tsm_dir,
                simulator_dir=self._simulator_dir,
                report_data=report_data,
            )
        )
        self._in_flight = work
        try:
            # shield: a timeout abandons the wait, not the thread (it cannot be stopped).
            return await asyncio.wait_for(asyncio.shield(work), self._timeout)
        except TimeoutError:
            return attestation_pb2.SnpEvidence(
                unavailable=f"SNP report request did not finish within {self._timeout:g} s"
            )
