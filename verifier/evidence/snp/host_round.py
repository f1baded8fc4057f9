"""AMD SEV-SNP evidence of one attestation round, bound to the same round's TPM quote.

Called by the attestation round only after the host's TPM quote authenticated:
the expected REPORT_DATA is derived from the verifier's challenge nonce and the
exact quote bytes the AK signed (:func:`weightgate.cvm_binding.snp_report_data`),
so a report produced for another host's quote or another round fails
``snp.report.report_data_mismatch``.

Checks, in order: the evidence is there (``snp.evidence.missing`` names why not);
then :func:`~verifier.evidence.snp.offline.verify_snp_offline` with the verifier's
pinned AMD roots, the group's policy and the expected REPORT_DATA: parse,
VCEK/VLEK chain to the pinned ARK of the certificate's product line, report
signature over the exact bytes, TCB and CHIP_ID bound to the certificate,
REPORT_DATA, then the policy (every violation). Only when everything passes does
the round carry ``snp.attested``, which the ``confidential_vm`` release control
requires. A warning from the offline verifier cannot occur here (policy and
REPORT_DATA are always given); if one ever did, it is a finding: fail closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from verifier.evidence.report import CheckOutcome
from verifier.evidence.snp.chain import AmdRoots
from verifier.evidence.snp.offline import SnpEvidence, verify_snp_offline
from verifier.evidence.snp.policy import SnpPolicy
from verifier.verdict import Reason, Tier
from weightgate.cvm_binding import snp_report_data
from weightgate.v1 import attestation_pb2

__all__ = ["CHECK_SNP_ATTESTED", "SnpRoundResult", "SnpVerifier"]

CHECK_SNP_ATTESTED = "snp.attested"


@dataclass(frozen=True, slots=True)
class SnpRoundResult:
    checks_run: frozenset[str]
    reasons: tuple[Reason, ...]


def _passed(checks: tuple[CheckOutcome, ...]) -> frozenset[str]:
    return frozenset(check.name for check in checks if check.status == "passed")


class SnpVerifier:
    """Verifies SEV-SNP evidence against the configured AMD roots (no network)."""

    def __init__(self, roots: AmdRoots) -> None:
        self._roots = roots

    def verify(
        self,
        evidence: attestation_pb2.SnpEvidence | None,
        *,
        challenge_nonce: bytes,
        tpm_attest: bytes,
        policy: SnpPolicy,
        at: datetime,
    ) -> SnpRoundResult:
        """``evidence`` against ``policy``; see the module docstring."""
        if evidence is None or evidence.unavailable or not evidence.report:
            why = (
                "the agent sent no SNP evidence"
                if evidence is None or not evidence.unavailable
                else evidence.unavailable
            )
            missing = Reason("snp.evidence.missing", f"the group has an SNP policy; {why}")
            return SnpRoundResult(frozenset(), (missing,))
        if not evidence.vcek:
            missing = Reason("snp.evidence.missing", "the report came without its VCEK/VLEK")
            return SnpRoundResult(frozenset(), (missing,))
        report = verify_snp_offline(
            SnpEvidence(
                report=bytes(evidence.report),
                key_certificates=bytes(evidence.vcek),
                chain=bytes(evidence.cert_chain) or None,
            ),
            roots=self._roots,
            policy=policy,
            expected_report_data=snp_report_data(challenge_nonce, tpm_attest),
            at=at,
        )
        checks = _passed(report.checks)
        verdict = report.verdict
        if verdict.tier is Tier.AFFIRMING:
            return SnpRoundResult(checks | {CHECK_SNP_ATTESTED}, ())
        return SnpRoundResult(
            checks, verdict.reasons or (Reason("snp.not_affirmed", verdict.tier.value),)
        )
