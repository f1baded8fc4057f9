"""The TdxEvidence answer to a challenge's TdxRequest: from configfs-tsm or the simulator.

The quote is requested over REPORTDATA = :func:`weightgate.cvm_binding.tdx_report_data`
(the challenge nonce and this round's quote bytes, the derivation the verifier
repeats), so the collection runs after the TPM quote. configfs-tsm's ``tdx_guest``
provider returns the quote in ``outblob`` with its PCK chain inside (certification
data), so there is no auxblob; the quote goes into the message untouched. Whatever
could not be collected is said in ``unavailable``, never silently left out, and no
exception leaves the collector.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.collectors.snp_tsm import TDX_GUEST, ConfigfsTsm, TsmReport, TsmUnavailable, tsm_report
from agent.config_devices import DEFAULT_SNP_TSM_DIR, TdxSource
from weightgate.v1 import attestation_pb2

__all__ = ["TDX_TIMEOUT_SECONDS", "BoundedTdxCollector", "tdx_evidence_message"]

# The TDX module makes the TD report at once, but the quote is signed by the
# quoting enclave on the host (through the VMM's quote service), which the kernel
# waits on for up to about 30 s. A little longer lets the kernel's own answer
# through; past it the round answers "unavailable" instead.
TDX_TIMEOUT_SECONDS = 35.0


def _collect(
    source: TdxSource, tsm_dir: Path | None, simulator_dir: Path | None, report_data: bytes
) -> TsmReport | TsmUnavailable:
    if source == "off":
        return TsmUnavailable('TDX evidence is switched off on this agent (tdx_evidence = "off")')
    if source == "simulator":
        from agent.collectors.tdx_simulated import simulated_tdx_quote  # noqa: PLC0415

        if simulator_dir is None:  # the config loader refuses this; kept fail-closed
            return TsmUnavailable("tdx_evidence = simulator without tdx_simulator directory")
        return simulated_tdx_quote(simulator_dir, report_data)
    return tsm_report(ConfigfsTsm(tsm_dir or DEFAULT_SNP_TSM_DIR), report_data, provider=TDX_GUEST)


def tdx_evidence_message(
    *,
    source: TdxSource,
    tsm_dir: Path | None,
    simulator_dir: Path | None,
    report_data: bytes,
) -> attestation_pb2.TdxEvidence:
    """This round's TDX quote over ``report_data`` (blocking: run it in a thread).

    ``tsm_dir``: configfs-tsm's report directory for source "tsm" (None: the
    kernel's default); ``simulator_dir``: the devsim.tdx guest for "simulator".
    """
    try:
        got = _collect(source, tsm_dir, simulator_dir, bytes(report_data))
    except (OSError, ValueError) as exc:  # a path the kernel refused oddly; never out
        return attestation_pb2.TdxEvidence(unavailable=f"TDX collection failed: {exc}")
    if isinstance(got, TsmUnavailable):
        return attestation_pb2.TdxEvidence(unavailable=got.reason)
    return attestation_pb2.TdxEvidence(quote=got.report)


class BoundedTdxCollector:
    """One collection at a time, each given at most ``timeout_seconds``.

    Reading configfs-tsm's outblob blocks in the kernel until the host's quoting
    enclave answers, and a thread cannot be interrupted: so the collection runs in
    a worker thread, the round waits at most ``timeout_seconds`` and then answers
    "unavailable", and while that thread has not returned, later rounds answer
    "unavailable" at once instead of stacking more threads on a stuck request.
    """

    def __init__(
        self,
        *,
        source: TdxSource,
        tsm_dir: Path,
        simulator_dir: Path | None,
        timeout_seconds: float = TDX_TIMEOUT_SECONDS,
    ) -> None:
        self._source, self._tsm_dir, self._simulator_dir = source, tsm_dir, simulator_dir
        self._timeout = timeout_seconds
        self._in_flight: asyncio.Future[attestation_pb2.TdxEvidence] | None = None

    async def collect(self, *, report_data: bytes) -> attestation_pb2.TdxEvidence:
        if self._in_flight is not None and not self._in_flight.done():
            return attestation_pb2.TdxEvidence(
                unavailable="the previous TDX quote request has not returned (quoting "
                "enclave or host quote service not answering)"
            )
        work = asyncio.ensure_future(
            asyncio.to_thread(
                tdx_evidence_message,
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
            return attestation_pb2.TdxEvidence(
                unavailable=f"TDX quote request did not finish within {self._timeout:g} s"
            )
