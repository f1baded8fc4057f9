"""The SnpEvidence answer to a challenge's SnpRequest: from configfs-tsm or the simulator.

Where configfs-tsm is absent, source "tsm" asks /dev/sev-guest instead
(SNP_GET_EXT_REPORT, :mod:`agent.collectors.sev_guest`): the same report and
certificate table.

The report is requested over REPORT_DATA = :func:`weightgate.cvm_binding.snp_report_data`
(the challenge nonce and this round's quote bytes, the derivation the verifier
repeats), so the collection runs after the quote. Report and certificates go into
the message untouched (DER certificates are only PEM-armored for ``cert_chain``);
whatever could not be collected is said in ``unavailable``, never silently left
out, and no exception leaves the collector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.collectors.cvm_ioctl import IoctlReport
from agent.collectors.sev_guest import sev_guest_report
from agent.collectors.snp_certtable import CertTableError, der_to_pem, parse_cert_table
from agent.collectors.snp_tsm import SEV_GUEST, TsmReport, TsmUnavailable
from agent.collectors.tsm_evidence import BoundedTsmCollector, TsmDevice, tsm_evidence
from agent.config_devices import SnpSource
from weightgate.cvm_binding import snp_report_data
from weightgate.v1 import attestation_pb2

__all__ = ["SNP_TIMEOUT_SECONDS", "BoundedSnpCollector", "snp_evidence_message"]

# The firmware answers in milliseconds, but the request goes through the
# hypervisor, which may throttle it (the kernel keeps retrying a throttled request
# for up to a minute). Past this the round answers "unavailable" instead.
SNP_TIMEOUT_SECONDS = 30.0
_FLAGS_OFFSET = 0x048  # the report's flags word: SIGNING_KEY in bits 4:2
_SIGNING_KEY_VCEK, _SIGNING_KEY_VLEK = 0, 1


def _simulated(directory: Path, report_data: bytes) -> TsmReport | TsmUnavailable:
    from agent.collectors.snp_simulated import simulated_snp_report  # noqa: PLC0415

    return simulated_snp_report(directory, report_data)


def _sev_guest(report_data: bytes) -> TsmReport | TsmUnavailable:
    return sev_guest_report(report_data)  # /dev/sev-guest, SNP_GET_EXT_REPORT


_SNP = TsmDevice(name="SNP", provider=SEV_GUEST, simulated=_simulated, fallback=_sev_guest)


def _message(got: TsmReport) -> attestation_pb2.SnpEvidence:
    message = attestation_pb2.SnpEvidence(report=got.report)
    if not got.auxblob:
        return message  # the host supplied no certificates; the verifier must have them
    try:
        table = parse_cert_table(got.auxblob)
    except CertTableError as exc:
        where = got.certificates if isinstance(got, IoctlReport) else "configfs-tsm auxblob"
        return attestation_pb2.SnpEvidence(unavailable=f"{where}: {exc}")
    if len(got.report) <= _FLAGS_OFFSET:
        # Too short to be a report (the verifier would refuse it anyway): said, not
        # an IndexError out of the collector.
        return attestation_pb2.SnpEvidence(
            unavailable=f"SNP report of {len(got.report)} bytes is too short to be one"
        )
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
    got = tsm_evidence(
        _SNP, source=source, tsm_dir=tsm_dir, simulator_dir=simulator_dir, report_data=report_data
    )
    if isinstance(got, TsmUnavailable):
        return attestation_pb2.SnpEvidence(unavailable=got.reason)
    return _message(got)


class BoundedSnpCollector(BoundedTsmCollector[attestation_pb2.SnpEvidence]):
    """One SNP report request at a time, each given at most ``timeout_seconds``.

    Reading configfs-tsm's outblob blocks in the kernel until the firmware (via
    the hypervisor) answers, and a thread cannot be interrupted: so the collection
    runs in a worker thread, the round waits at most ``timeout_seconds`` and then
    answers "unavailable", and while that thread has not returned, later rounds
    answer "unavailable" at once instead of stacking more threads on a stuck request.
    """

    WHAT = "SNP report request"
    STUCK = "firmware or hypervisor"
    TIMEOUT_SECONDS = SNP_TIMEOUT_SECONDS
    NONE = "no SNP report"

    def _evidence(self, **request: Any) -> attestation_pb2.SnpEvidence:
        return snp_evidence_message(**request)  # looked up at each call

    def _unavailable(self, reason: str) -> attestation_pb2.SnpEvidence:
        return attestation_pb2.SnpEvidence(unavailable=reason)

    def _report_data(self, challenge_nonce: bytes, tpm_attest: bytes) -> bytes:
        return snp_report_data(challenge_nonce, tpm_attest)
