"""Intel TDX evidence of one attestation round, bound to the same round's TPM quote.

Called by the attestation round only after the host's TPM quote authenticated: the
expected REPORTDATA is derived from the verifier's challenge nonce and the exact
quote bytes the AK signed (:func:`weightgate.cvm_binding.tdx_report_data`), so a
TD quote produced for another host's quote or another round fails
``tdx.quote.report_data_mismatch``.

Checks, in order: the evidence is there (``tdx.evidence.missing`` names why not);
the collateral directory is readable (``tdx.collateral.unreadable``); then
:func:`~verifier.evidence.tdx.offline.verify_tdx_offline` with the configured root,
the collateral as it is now, the group's policy and the expected REPORTDATA: quote
and QE signatures, PCK chain, CRLs, TCB Info / QE Identity (TCB levels in Intel's
order, the policy's ``min_tcb_evaluation_data_number``), TCB status, REPORTDATA,
policy. Only an affirming result gives the round ``tdx.attested``, which the
``confidential_vm`` release control accepts; a warning (e.g. a collateral piece
missing) is a finding here: the stream fails closed.
"""

from __future__ import annotations

from datetime import datetime

from verifier.config_tdx import TdxConfig
from verifier.evidence.errors import ParseError
from verifier.evidence.report import RoundFindings, round_findings
from verifier.evidence.tdx.collateral_files import CollateralFilesError, read_collateral_dir
from verifier.evidence.tdx.offline import TdxEvidence, verify_tdx_offline
from verifier.evidence.tdx.pck_extension import read_pck_extension
from verifier.evidence.tdx.pki import parse_pem_certificates
from verifier.evidence.tdx.policy import TdxPolicy
from verifier.evidence.tdx.quote import parse_quote, strip_zero_padding
from weightgate.cvm_binding import tdx_report_data
from weightgate.v1 import attestation_pb2

__all__ = ["CHECK_TDX_ATTESTED", "TdxVerifier"]

CHECK_TDX_ATTESTED = "tdx.attested"


def _platform_of(quote: bytes) -> tuple[bytes | None, str | None]:
    """The quote's FMSPC and PCK CA kind, read unauthenticated to pick collateral files
    only (the checks that follow bind both to the authenticated PCK); None if unreadable."""
    try:
        parsed = parse_quote(strip_zero_padding(quote)[0])
        leaf = parse_pem_certificates(parsed.certification.pck_chain_pem)[0]
        fmspc = read_pck_extension(leaf).fmspc
    except (ParseError, IndexError):
        return None, None
    issuer = leaf.issuer.rfc4514_string().lower()
    kind = "processor" if "processor" in issuer else "platform" if "platform" in issuer else None
    return fmspc, kind


class TdxVerifier:
    """Verifies TDX quotes with the configured root and collateral (no network)."""

    def __init__(self, config: TdxConfig) -> None:
        self._config = config

    def verify(
        self,
        evidence: attestation_pb2.TdxEvidence | None,
        *,
        challenge_nonce: bytes,
        tpm_attest: bytes,
        policy: TdxPolicy,
        at: datetime,
    ) -> RoundFindings:
        """``evidence`` against ``policy``; see the module docstring."""
        if evidence is None or evidence.unavailable or not evidence.quote:
            why = (
                evidence.unavailable
                if evidence is not None and evidence.unavailable
                else "the agent sent no TDX quote"
            )
            return RoundFindings.failed(
                "tdx.evidence.missing", f"the group has a TDX policy; {why}"
            )
        fmspc, pck_ca = _platform_of(bytes(evidence.quote))
        try:
            collateral = read_collateral_dir(
                self._config.collateral_dir, fmspc=fmspc, pck_ca=pck_ca
            )
        except CollateralFilesError as exc:
            return RoundFindings.failed("tdx.collateral.unreadable", str(exc))
        report = verify_tdx_offline(
            TdxEvidence(
                quote=bytes(evidence.quote),
                root=self._config.root,
                at=at,
                collateral=collateral,
                policy=policy,
                expected_report_data=tdx_report_data(challenge_nonce, tpm_attest),
                root_pins=self._config.root_pins,
            )
        )
        return round_findings(report, attested=CHECK_TDX_ATTESTED, kind="tdx")
