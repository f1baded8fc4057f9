"""AMD SEV-SNP evidence of one attestation round, bound to the same round's TPM quote.

Called by the attestation round only after the host's TPM quote authenticated:
the expected REPORT_DATA is derived from the verifier's challenge nonce and the
exact quote bytes the AK signed (:func:`weightgate.cvm_binding.snp_report_data`),
so a report produced for another host's quote or another round fails
``snp.report.report_data_mismatch``.

Checks, in order: the evidence is there (``snp.evidence.missing`` names why not;
a report sent without its VCEK is completed from ``[verifier.snp] vcek_dir`` by
CHIP_ID and REPORTED_TCB, and the ASKs shipped beside the pinned ARKs are offered
as intermediates); with ``crl_dir`` configured, its CRLs as they are now (read
again every round; a file that cannot be read or parsed fails the round
``snp.crl.unreadable``, naming it); then :func:`~verifier.evidence.snp.offline.verify_snp_offline`
with the verifier's pinned AMD roots, the CRLs, the group's policy and the expected
REPORT_DATA: parse, VCEK/VLEK chain to the pinned ARK of the certificate's product
line, revocation (only with ``crl_dir``: a current CRL of that ARK not listing
the ASK/ASVK; without it ``snp.revocation`` is absent), report
signature over the exact bytes, TCB and CHIP_ID bound to the certificate,
REPORT_DATA, then the policy (every violation). Only when everything passes does
the round carry ``snp.attested``, which the ``confidential_vm`` release control
requires. A warning from the offline verifier cannot occur here (policy and
REPORT_DATA are always given); if one ever did, it is a finding: fail closed.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from verifier.config_snp import SnpConfig
from verifier.evidence.errors import ParseError
from verifier.evidence.report import RoundFindings, round_findings
from verifier.evidence.snp.crl_files import CrlFilesError, read_crl_dir
from verifier.evidence.snp.offline import SnpEvidence, verify_snp_offline
from verifier.evidence.snp.policy import SnpPolicy
from verifier.evidence.snp.report import parse_report
from weightgate.cvm_binding import snp_report_data
from weightgate.v1 import attestation_pb2

__all__ = ["CHECK_SNP_ATTESTED", "SnpVerifier"]

CHECK_SNP_ATTESTED = "snp.attested"


# A VCEK is about 1.4 KB; bound what a wrong file in vcek_dir costs.
_MAX_VCEK_BYTES = 16 * 1024


def _vcek_from_dir(directory: Path, report: bytes) -> bytes | None:
    """The VCEK filed for this report's CHIP_ID and REPORTED_TCB, or None.

    Unauthenticated input only chooses the file name (both fields are fixed-size
    binary, so the name is hex); whatever is found is then checked like any VCEK:
    chain to a pinned ARK, its TCB and HWID against the signed report.
    """
    try:
        parsed = parse_report(report)
    except ParseError:
        return None  # the offline verifier names the malformed report
    path = directory / f"{parsed.chip_id.hex()}-{parsed.reported_tcb:016x}.der"
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_VCEK_BYTES + 1)
    except OSError:
        return None
    return data if len(data) <= _MAX_VCEK_BYTES else None


class SnpVerifier:
    """Verifies SEV-SNP evidence against the configured AMD roots (no network)."""

    def __init__(self, config: SnpConfig) -> None:
        self._roots = config.roots
        self._vcek_dir = config.vcek_dir
        self._crl_dir = config.crl_dir
        # Appended to whatever chain the host sent: they only help build a path.
        self._known_intermediates = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in config.intermediates
        )

    def verify(
        self,
        evidence: attestation_pb2.SnpEvidence | None,
        *,
        challenge_nonce: bytes,
        tpm_attest: bytes,
        policy: SnpPolicy,
        at: datetime,
    ) -> RoundFindings:
        """``evidence`` against ``policy``; see the module docstring."""
        if evidence is None or evidence.unavailable or not evidence.report:
            why = (
                "the agent sent no SNP evidence"
                if evidence is None or not evidence.unavailable
                else evidence.unavailable
            )
            return RoundFindings.failed(
                "snp.evidence.missing", f"the group has an SNP policy; {why}"
            )
        vcek = bytes(evidence.vcek)
        if not vcek and self._vcek_dir is not None:
            vcek = _vcek_from_dir(self._vcek_dir, bytes(evidence.report)) or b""
        if not vcek:
            return RoundFindings.failed(
                "snp.evidence.missing",
                "the report came without its VCEK/VLEK and vcek_dir holds none for it",
            )
        crls = None
        if self._crl_dir is not None:
            try:
                crls = read_crl_dir(self._crl_dir)
            except CrlFilesError as exc:
                return RoundFindings.failed("snp.crl.unreadable", str(exc))
        chain = bytes(evidence.cert_chain)
        if not chain or chain.lstrip().startswith(b"-----BEGIN"):
            # PEM (as the agent forwards it) can take the known intermediates after it;
            # a single DER certificate is left as sent.
            chain += self._known_intermediates
        report = verify_snp_offline(
            SnpEvidence(report=bytes(evidence.report), key_certificates=vcek, chain=chain or None),
            roots=self._roots,
            policy=policy,
            expected_report_data=snp_report_data(challenge_nonce, tpm_attest),
            at=at,
            crls=crls,
        )
        return round_findings(report, attested=CHECK_SNP_ATTESTED, kind="snp")
