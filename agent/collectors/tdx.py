"""The TdxEvidence answer to a challenge's TdxRequest: from configfs-tsm or the simulator.

The quote is requested over REPORTDATA = :func:`weightgate.cvm_binding.tdx_report_data`
(the challenge nonce and this round's quote bytes, the derivation the verifier
repeats), so the collection runs after the TPM quote. configfs-tsm's ``tdx_guest``
provider returns the quote in ``outblob`` with its PCK chain inside (certification
data), so there is no auxblob; the quote goes into the message untouched. Whatever
could not be collected is said in ``unavailable``, never silently left out, and no
exception leaves the collector.

Where configfs-tsm is absent there is no quote to be had: /dev/tdx_guest gives a
TDREPORT only, and the reason says so (:mod:`agent.collectors.tdx_guest`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.collectors.snp_tsm import TDX_GUEST, TsmReport, TsmUnavailable
from agent.collectors.tdx_guest import tdx_guest_fallback
from agent.collectors.tsm_evidence import BoundedTsmCollector, TsmDevice, tsm_evidence
from agent.config_devices import TdxSource
from weightgate.cvm_binding import tdx_report_data
from weightgate.v1 import attestation_pb2

__all__ = ["TDX_TIMEOUT_SECONDS", "BoundedTdxCollector", "tdx_evidence_message"]

# The TDX module makes the TD report at once, but the quote is signed by the
# quoting enclave on the host (through the VMM's quote service), which the kernel
# waits on for up to about 30 s. A little longer lets the kernel's own answer
# through; past it the round answers "unavailable" instead.
TDX_TIMEOUT_SECONDS = 35.0


def _simulated(directory: Path, report_data: bytes) -> TsmReport | TsmUnavailable:
    from agent.collectors.tdx_simulated import simulated_tdx_quote  # noqa: PLC0415

    return simulated_tdx_quote(directory, report_data)


def _tdx_guest(report_data: bytes) -> TsmReport | TsmUnavailable:
    return tdx_guest_fallback(report_data)  # why /dev/tdx_guest gives no quote


_TDX = TsmDevice(name="TDX", provider=TDX_GUEST, simulated=_simulated, fallback=_tdx_guest)


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
    got = tsm_evidence(
        _TDX, source=source, tsm_dir=tsm_dir, simulator_dir=simulator_dir, report_data=report_data
    )
    if isinstance(got, TsmUnavailable):
        return attestation_pb2.TdxEvidence(unavailable=got.reason)
    return attestation_pb2.TdxEvidence(quote=got.report)


class BoundedTdxCollector(BoundedTsmCollector[attestation_pb2.TdxEvidence]):
    """One TDX quote request at a time, each given at most ``timeout_seconds``.

    Reading configfs-tsm's outblob blocks in the kernel until the host's quoting
    enclave answers, and a thread cannot be interrupted: so the collection runs in
    a worker thread, the round waits at most ``timeout_seconds`` and then answers
    "unavailable", and while that thread has not returned, later rounds answer
    "unavailable" at once instead of stacking more threads on a stuck request.
    """

    WHAT = "TDX quote request"
    STUCK = "quoting enclave or host quote service"
    TIMEOUT_SECONDS = TDX_TIMEOUT_SECONDS
    NONE = "no TDX quote"

    def _evidence(self, **request: Any) -> attestation_pb2.TdxEvidence:
        return tdx_evidence_message(**request)  # looked up at each call

    def _unavailable(self, reason: str) -> attestation_pb2.TdxEvidence:
        return attestation_pb2.TdxEvidence(unavailable=reason)

    def _report_data(self, challenge_nonce: bytes, tpm_attest: bytes) -> bytes:
        return tdx_report_data(challenge_nonce, tpm_attest)
