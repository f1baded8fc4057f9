"""Azure confidential VMs (SNP): TPM quote -> vTPM AK -> SNP report -> AMD root.

On Azure the guest cannot choose REPORT_DATA: the paravisor (HCL) puts there the
digest of its runtime claims, a JSON naming the vTPM's attestation key
``HCLAkPub``. So the SNP signature vouches for that key, and the key for the TPM
quote, whose extraData carries the verifier's nonce: the quote is where freshness
comes from. The AK's TPM attributes are not in the claims (a JWK, no TPMT_PUBLIC);
that it is the vTPM's restricted signing key is what the SNP-signed claims assert.

Checks, in order (a check whose input failed does not run; the report's checks
and the verdict are as for ``verify_snp_offline``):

1. ``snp.azure.evidence.parse``: the evidence JSON, its TPMS_ATTEST and HCL report
   parse (``snp.azure.malformed``; ``azure_evidence.py``);
2. the SNP report, through ``verify_snp_offline`` with the runtime claims' digest
   as the expected REPORT_DATA: ``snp.report.parse``, ``snp.certs.parse``, the
   authentication checks (VCEK -> ASK -> pinned ARK, signature, TCB, CHIP_ID),
   then ``snp.azure.runtime_claims``: REPORT_DATA == digest || zeros
   (``snp.azure.runtime_claims_mismatch``);
3. ``snp.azure.ak``: the runtime claims parse and hold one ``HCLAkPub`` RSA key of
   at least 2048 bits (``snp.azure.runtime_claims_malformed`` /
   ``ak_missing`` / ``ak_unsupported`` / ``ak_weak_key`` / ``ak_invalid``);
4. ``snp.azure.quote.signature``: RSASSA-PKCS1-v1_5/SHA-256 by HCLAkPub over the
   exact TPMS_ATTEST bytes (``snp.azure.quote_signature_invalid``);
5. ``snp.azure.quote.nonce``: extraData == the expected nonce
   (``snp.azure.nonce_mismatch``); without one, the warning
   ``snp.azure.nonce_not_checked``: never affirming without freshness;
6. ``snp.azure.quote.pcr_digest``: when the evidence carries PCR values, every
   quoted PCR has one (``snp.azure.pcr_values_missing``) and their SHA-256 is the
   quoted pcrDigest (``snp.azure.pcr_digest_mismatch``);
7. ``snp.policy``: the SNP policy (every violation); without one the warning
   ``snp.policy.not_appraised``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from verifier.evidence.errors import ParseError
from verifier.evidence.report import CheckOutcome, EvidenceReport, ReportBuilder
from verifier.evidence.snp.appraise import CHECK_POLICY, CHECK_REPORT_DATA
from verifier.evidence.snp.authenticate import AUTHENTICATION_CHECKS
from verifier.evidence.snp.azure_evidence import (
    AK_KID,
    AzureVtpmEvidence,
    RuntimeClaims,
    parse_azure_evidence,
    parse_runtime_claims,
)
from verifier.evidence.snp.chain import AmdRoots
from verifier.evidence.snp.hcl import runtime_claims_digest
from verifier.evidence.snp.offline import (
    NOT_APPRAISED,
    NOT_FRESH,
    SnpEvidence,
    verify_snp_offline,
)
from verifier.evidence.snp.policy import SnpPolicy
from verifier.evidence.tpm.parse import QuoteInfo
from verifier.verdict import Reason

__all__ = [
    "CHECK_AK",
    "CHECK_EVIDENCE",
    "CHECK_NONCE",
    "CHECK_PCR_DIGEST",
    "CHECK_QUOTE_SIGNATURE",
    "CHECK_RUNTIME_CLAIMS",
    "NONCE_NOT_CHECKED",
    "check_pcr_digest",
    "check_quote_nonce",
    "check_quote_signature",
    "verify_azure_snp_vtpm",
]

KIND = "snp"
CHECK_EVIDENCE = "snp.azure.evidence.parse"
CHECK_RUNTIME_CLAIMS = "snp.azure.runtime_claims"
CHECK_AK = "snp.azure.ak"
CHECK_QUOTE_SIGNATURE = "snp.azure.quote.signature"
CHECK_NONCE = "snp.azure.quote.nonce"
CHECK_PCR_DIGEST = "snp.azure.quote.pcr_digest"
NONCE_NOT_CHECKED = "snp.azure.nonce_not_checked"
_QUOTE_CHECKS = (CHECK_QUOTE_SIGNATURE, CHECK_NONCE, CHECK_PCR_DIGEST)
_SNP_CHECKS = ("snp.report.parse", "snp.certs.parse", *AUTHENTICATION_CHECKS)
_MISMATCH = Reason(
    "snp.azure.runtime_claims_mismatch", "REPORT_DATA is not the digest of the HCL runtime claims"
)
_AK_CODES = ("ak_missing", "ak_unsupported", "ak_weak_key", "ak_invalid")
# The Azure vTPM's AK signs quotes with RSASSA-PKCS1-v1_5 and SHA-256.
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def check_quote_signature(attest: bytes, signature: bytes, ak: rsa.RSAPublicKey) -> list[Reason]:
    """``snp.azure.quote_signature_invalid`` unless ``signature`` by ``ak`` verifies
    over the exact ``attest`` bytes (never a re-encoding of the parsed quote)."""
    try:
        ak.verify(signature, attest, _PKCS1V15, _SHA256)
    except InvalidSignature:
        # InvalidSignature carries no message; it is the failure, never a flag.
        return [
            Reason(
                "snp.azure.quote_signature_invalid",
                f"the TPM quote does not verify under the runtime claims' {AK_KID}",
            )
        ]
    return []


def check_quote_nonce(quote: QuoteInfo, expected: bytes) -> list[Reason]:
    """``snp.azure.nonce_mismatch`` unless the quote's extraData is ``expected``."""
    if hmac.compare_digest(quote.extra_data, expected):
        return []
    return [Reason("snp.azure.nonce_mismatch", "TPM quote extraData != the expected nonce")]


def check_pcr_digest(quote: QuoteInfo, pcrs: tuple[bytes, ...]) -> list[Reason]:
    """The quoted PCRs (TPML order, ascending) all have a value in ``pcrs`` (the
    SHA-256 bank from PCR 0) and hash, with the signature's SHA-256, to pcrDigest."""
    ordered: list[bytes] = []
    missing: list[str] = []
    for selection in quote.pcr_selection:
        for index in selection.pcrs:
            if selection.hash_algorithm != "sha256" or index >= len(pcrs):
                missing.append(f"{selection.hash_algorithm}:{index}")
            else:
                ordered.append(pcrs[index])
    if missing:
        return [Reason("snp.azure.pcr_values_missing", "no value for " + ", ".join(missing))]
    if hmac.compare_digest(hashlib.sha256(b"".join(ordered)).digest(), quote.pcr_digest):
        return []
    return [
        Reason("snp.azure.pcr_digest_mismatch", "SHA-256 of the PCR values != quoted pcrDigest")
    ]


def _snp_part(
    evidence: AzureVtpmEvidence,
    report: EvidenceReport,
    out: ReportBuilder,
) -> tuple[bool, CheckOutcome | None, list[Reason], list[Reason]]:
    """Copy the SNP report's checks and findings into ``out``, the REPORT_DATA check
    under its Azure name: on Azure that comparison *is* the runtime-claims binding.
    Returns whether the claims are bound, and the policy outcome, reasons and
    warnings, which go last. Unknown warning codes count as failures."""
    policy: CheckOutcome | None = None
    bound = False
    for check in report.checks:
        if check.name == CHECK_POLICY:
            policy = check
        elif check.name == CHECK_REPORT_DATA:
            bound = check.status == "passed"
            detail = str(_MISMATCH) if check.status == "failed" else check.detail
            out.checks.append(CheckOutcome(CHECK_RUNTIME_CLAIMS, "binding", check.status, detail))
        else:
            out.checks.append(check)
    policy_reasons: list[Reason] = []
    policy_warnings: list[Reason] = []
    for reason in report.verdict.reasons:
        if reason.code == "snp.report.report_data_mismatch":
            out.reasons.append(_MISMATCH)
        elif reason.code == NOT_APPRAISED:
            policy_warnings.append(reason)
        elif reason.code == NOT_FRESH:
            out.warnings.append(reason)
        elif reason.code.startswith("snp.policy."):
            policy_reasons.append(reason)
        else:
            out.reasons.append(reason)
    out.claims.update(report.claims)
    out.claims["azure_runtime_claims_digest"] = runtime_claims_digest(evidence.hcl).hex()
    return bound, policy, policy_reasons, policy_warnings


def _runtime_claims(evidence: AzureVtpmEvidence, out: ReportBuilder) -> RuntimeClaims | None:
    try:
        claims = parse_runtime_claims(evidence.hcl.runtime_claims)
    except ParseError as exc:
        code = exc.code if exc.code in _AK_CODES else "runtime_claims_malformed"
        out.check(CHECK_AK, "binding", [Reason(f"snp.azure.{code}", str(exc))])
        return None
    spki = claims.ak.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    out.check(CHECK_AK, "binding", [], f"{AK_KID} RSA-{claims.ak_bits}")
    out.claims["azure"] = {
        "ak": {
            "kid": AK_KID,
            "bits": claims.ak_bits,
            "spki_sha256": hashlib.sha256(spki).hexdigest(),
        },
        "vm_configuration": dict(claims.vm_configuration),
        "user_data": claims.user_data,
    }
    return claims


def _quote(
    evidence: AzureVtpmEvidence,
    claims: RuntimeClaims,
    expected_nonce: bytes | None,
    out: ReportBuilder,
) -> None:
    quote = evidence.quote
    azure: dict[str, Any] = out.claims["azure"]
    failed = check_quote_signature(evidence.attest, evidence.signature, claims.ak)
    out.check(CHECK_QUOTE_SIGNATURE, "authenticate", failed)
    if failed:
        out.skip((CHECK_NONCE, CHECK_PCR_DIGEST), "authenticate", "quote signature invalid")
        return
    azure["tpm_nonce"] = quote.extra_data.hex()
    azure["pcr_selection"] = {s.hash_algorithm: list(s.pcrs) for s in quote.pcr_selection}
    if expected_nonce is not None:
        out.check(CHECK_NONCE, "binding", check_quote_nonce(quote, expected_nonce))
    else:
        out.skip((CHECK_NONCE,), "binding", "no expected nonce given")
        out.warnings.append(
            Reason(NONCE_NOT_CHECKED, "TPM quote nonce not compared (--nonce): freshness unknown")
        )
    if evidence.pcrs is None:
        out.skip((CHECK_PCR_DIGEST,), "authenticate", "the evidence carries no PCR values")
        return
    failed = check_pcr_digest(quote, evidence.pcrs)
    out.check(CHECK_PCR_DIGEST, "authenticate", failed)
    if not failed:
        azure["pcrs"] = {
            "sha256": {str(i): evidence.pcrs[i].hex() for s in quote.pcr_selection for i in s.pcrs}
        }


def verify_azure_snp_vtpm(
    evidence: bytes,
    *,
    chain: bytes | None = None,
    roots: AmdRoots | None,
    policy: SnpPolicy | None,
    expected_nonce: bytes | None,
    at: datetime,
) -> EvidenceReport:
    """Verify Azure SNP vTPM evidence (the JSON bytes); checks in the module docstring.

    ``chain``: the ASK and ARK (PEM; the evidence carries only the VCEK), or None
    with ``roots`` and the ASK in the trust directory passed as ``chain``.
    ``roots``: the pinned ARKs; None takes ARKs from ``chain``, each checked
    against its pin. ``expected_nonce``: the quote's extraData issued by this
    verifier. Raises ValueError (a programming error) if it is empty.
    """
    if expected_nonce is not None and not expected_nonce:
        raise ValueError("expected_nonce must be a non-empty verifier nonce")
    out = ReportBuilder()
    try:
        parsed = parse_azure_evidence(evidence)
    except ParseError as exc:
        out.claims["at"] = at.isoformat()
        out.check(CHECK_EVIDENCE, "parse", [Reason("snp.azure.malformed", f"{exc.code}: {exc}")])
        later = (*_SNP_CHECKS, CHECK_RUNTIME_CLAIMS, CHECK_AK, *_QUOTE_CHECKS, CHECK_POLICY)
        out.skip(later, "authenticate", "parsing failed")
        return out.build(KIND)
    out.check(CHECK_EVIDENCE, "parse", [], f"Azure SNP vTPM evidence v{parsed.version}")
    snp = verify_snp_offline(
        SnpEvidence(report=parsed.hcl.snp_report, key_certificates=parsed.vcek, chain=chain),
        roots=roots,
        policy=policy,
        expected_report_data=runtime_claims_digest(parsed.hcl),
        at=at,
    )
    bound, policy_check, policy_reasons, policy_warnings = _snp_part(parsed, snp, out)
    claims = _runtime_claims(parsed, out) if bound else None
    if not bound:
        why = "the runtime claims are not bound to an authentic SNP report"
        out.skip((CHECK_AK, *_QUOTE_CHECKS), "authenticate", why)
    elif claims is None:
        out.skip(_QUOTE_CHECKS, "authenticate", f"no usable {AK_KID}")
    else:
        _quote(parsed, claims, expected_nonce, out)
    if policy_check is not None:
        out.checks.append(policy_check)
    out.reasons.extend(policy_reasons)
    out.warnings.extend(policy_warnings)
    return out.build(KIND)
