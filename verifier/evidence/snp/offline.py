"""`weightgate evidence verify snp` as a library: parse, authenticate, appraise, one report.

Stages and their checks, in order (a stage whose input failed does not run):

* parse: ``snp.report.parse`` (raw, hex or Azure HCL-wrapped report),
  ``snp.certs.parse`` (VCEK/VLEK and the chain file);
* authenticate: ``snp.key.parse``, ``snp.chain``, ``snp.revocation``,
  ``snp.report.signing_key``, ``snp.report.signature``, ``snp.report.product``,
  ``snp.tcb``, ``snp.chip_id`` (authenticate.py; the first failure stops the
  stage). ``snp.revocation`` runs only when CRLs are given; otherwise it is
  reported ``not_run`` and the claims say ``revocation.checked: false``, the
  verdict being what it was before CRLs existed;
* binding: ``snp.report.report_data`` (without an expected value: the warning
  ``snp.report.report_data_not_checked``),
  ``snp.azure.runtime_claims`` (for an HCL report);
* appraise: ``snp.policy``; without a policy nothing is appraised and the result is
  the warning ``snp.policy.not_appraised``: never affirming without reference values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from verifier.evidence.errors import ParseError
from verifier.evidence.report import EvidenceReport, ReportBuilder
from verifier.evidence.snp.appraise import (
    CHECK_POLICY,
    CHECK_REPORT_DATA,
    appraise_report,
    check_report_data,
)
from verifier.evidence.snp.authenticate import (
    AUTHENTICATION_CHECKS,
    AuthenticatedReport,
    authenticate_report,
)
from verifier.evidence.snp.certs import load_certificates
from verifier.evidence.snp.chain import AmdRoots, RootError, load_amd_roots
from verifier.evidence.snp.crl import CHECK_REVOCATION, NOT_CHECKED, AmdCrl
from verifier.evidence.snp.hcl import (
    HclReport,
    check_runtime_claims,
    is_hcl_report,
    parse_hcl_report,
)
from verifier.evidence.snp.policy import SnpPolicy
from verifier.evidence.snp.report import AttestationReport, parse_report
from verifier.verdict import Reason, VerificationError

__all__ = ["NOT_APPRAISED", "NOT_FRESH", "SnpEvidence", "verify_snp_offline"]

KIND = "snp"
CHECK_PARSE = "snp.report.parse"
CHECK_CERTS = "snp.certs.parse"
CHECK_AZURE = "snp.azure.runtime_claims"
NOT_APPRAISED = "snp.policy.not_appraised"
NOT_FRESH = "snp.report.report_data_not_checked"


@dataclass(frozen=True)
class SnpEvidence:
    """The files of one SNP attestation, as bytes.

    ``key_certificates``: the VCEK or VLEK (DER or PEM), optionally followed (PEM)
    by its ASK/ASVK and ARK, as Azure and KDS bundles come. ``chain``: more
    intermediates and ARKs (KDS ``cert_chain``). ARKs found in either are trusted
    only when they match a pin, and are ignored when ``roots`` are configured.
    """

    report: bytes
    key_certificates: bytes
    chain: bytes | None = None


def _parse(
    evidence: SnpEvidence, out: ReportBuilder
) -> tuple[AttestationReport, HclReport | None] | None:
    hcl = None
    try:
        raw = evidence.report
        if is_hcl_report(raw):
            hcl = parse_hcl_report(raw)
            raw = hcl.snp_report
        report = parse_report(raw)
    except ParseError as exc:
        out.check(CHECK_PARSE, "parse", [Reason("snp.report.malformed", f"{exc.code}: {exc}")])
        return None
    out.check(CHECK_PARSE, "parse", [], "Azure HCL report" if hcl is not None else "")
    return report, hcl


def _certificates(
    evidence: SnpEvidence, out: ReportBuilder
) -> tuple[x509.Certificate, list[x509.Certificate]] | None:
    try:
        bundle = load_certificates(evidence.key_certificates, "VCEK/VLEK")
        chain = [] if evidence.chain is None else load_certificates(evidence.chain, "chain")
    except ParseError as exc:
        out.check(CHECK_CERTS, "parse", [Reason("snp.chain.malformed", str(exc))])
        return None
    out.check(CHECK_CERTS, "parse", [])
    return bundle[0], [*bundle[1:], *chain]


def _authenticate(
    report: AttestationReport,
    leaf: x509.Certificate,
    others: list[x509.Certificate],
    *,
    roots: AmdRoots | None,
    crls: Sequence[AmdCrl] | None,
    at: datetime,
    out: ReportBuilder,
) -> AuthenticatedReport | None:
    intermediates = [c for c in others if c.issuer != c.subject]
    expected = tuple(
        name for name in AUTHENTICATION_CHECKS if crls is not None or name != CHECK_REVOCATION
    )
    try:
        if roots is None:
            roots = load_amd_roots(c for c in others if c.issuer == c.subject)
        auth = authenticate_report(
            report,
            key_certificate=leaf,
            intermediates=intermediates,
            roots=roots,
            at=at,
            crls=crls,
        )
    except (VerificationError, ParseError, RootError) as exc:
        if isinstance(exc, VerificationError):
            reason, done = exc.reason, exc.checks_run
        elif isinstance(exc, ParseError):
            reason, done = Reason("snp.chain.malformed", f"{exc.code}: {exc}"), frozenset()
        else:
            reason, done = (
                Reason("snp.chain.untrusted", str(exc)),
                frozenset(AUTHENTICATION_CHECKS[:1]),
            )
        failed_at = next(name for name in expected if name not in done)
        for name in AUTHENTICATION_CHECKS:
            if name not in expected:
                out.skip((name,), "authenticate", NOT_CHECKED)
            elif name in done:
                out.check(name, "authenticate", [])
            elif name == failed_at:
                out.check(name, "authenticate", [reason])
            else:
                out.skip((name,), "authenticate", f"{failed_at} failed")
        return None
    for name in AUTHENTICATION_CHECKS:
        detail = ""
        if name not in expected:
            out.skip((name,), "authenticate", NOT_CHECKED)
            continue
        if name == CHECK_REVOCATION:
            detail = auth.revocation or ""
        if name == "snp.chip_id" and not auth.chip_id_checked:
            detail = "not applicable: " + ("VLEK" if auth.key.hwid is None else "CHIP_ID masked")
        out.check(name, "authenticate", [], detail)
    return auth


def _revocation_claim(out: ReportBuilder) -> dict[str, Any]:
    """Whether revocation was checked and what was found, for an auditor reading claims."""
    for check in out.checks:
        if check.name == CHECK_REVOCATION:
            return {"checked": check.status != "not_run", "detail": check.detail}
    return {"checked": False, "detail": NOT_CHECKED}


def _claims(report: AttestationReport, auth: AuthenticatedReport | None) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "version": report.version,
        "guest_svn": report.guest_svn,
        "policy": report.policy.to_json(),
        "vmpl": report.vmpl,
        "signing_key": report.signing_key,
        "measurement": report.measurement.hex(),
        "report_data": report.report_data.hex(),
        "host_data": report.host_data.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex() if report.author_key_en else None,
        "chip_id": report.chip_id.hex(),
        "platform_info": f"0x{report.platform_info.raw:x}",
        "firmware": ".".join(map(str, report.current_version)),
        "cpuid": None
        if report.cpuid_family is None
        else [report.cpuid_family, report.cpuid_model, report.cpuid_stepping],
    }
    if auth is None:
        claims["tcb_raw"] = {
            "current": f"0x{report.current_tcb:016x}",
            "reported": f"0x{report.reported_tcb:016x}",
            "committed": f"0x{report.committed_tcb:016x}",
            "launch": f"0x{report.launch_tcb:016x}",
        }
        return claims
    claims.update(
        product=auth.product.value,
        product_name=auth.key.product_name,
        key=auth.key.kind.value,
        csp_id=auth.key.csp_id,
        tcb={
            "current": auth.current_tcb.to_json(),
            "reported": auth.reported_tcb.to_json(),
            "committed": auth.committed_tcb.to_json(),
            "launch": auth.launch_tcb.to_json(),
        },
    )
    return claims


def verify_snp_offline(
    evidence: SnpEvidence,
    *,
    roots: AmdRoots | None,
    policy: SnpPolicy | None,
    expected_report_data: bytes | None,
    at: datetime,
    crls: Sequence[AmdCrl] | None = None,
) -> EvidenceReport:
    """Run every stage (module docstring) and return one report.

    ``roots``: the pinned ARKs from a trust directory; None takes ARKs from the
    evidence files, each of which must match its pin (``snp.chain.untrusted``).
    ``crls``: AMD CRLs (crl.py); None: revocation is not checked (and the report
    says so); a sequence, even empty, requires a current authentic CRL of the
    chain's product line.
    """
    out = ReportBuilder()
    out.claims["at"] = at.isoformat()
    parsed = _parse(evidence, out)
    certificates = _certificates(evidence, out)
    later = (*AUTHENTICATION_CHECKS, CHECK_REPORT_DATA, CHECK_POLICY)
    if parsed is None or certificates is None:
        out.skip(later, "authenticate", "parsing failed")
        return out.build(KIND)
    report, hcl = parsed
    auth = _authenticate(report, *certificates, roots=roots, crls=crls, at=at, out=out)
    out.claims.update(_claims(report, auth))
    out.claims["revocation"] = _revocation_claim(out)
    if auth is None:
        out.skip((CHECK_REPORT_DATA, CHECK_POLICY), "appraise", "authentication failed")
        return out.build(KIND)
    if expected_report_data is not None:
        out.check(CHECK_REPORT_DATA, "binding", check_report_data(expected_report_data, auth))
    else:
        # Without it nothing shows the report answers this verifier's challenge.
        out.skip((CHECK_REPORT_DATA,), "binding", "no expected REPORT_DATA given")
        out.warnings.append(
            Reason(NOT_FRESH, "REPORT_DATA not compared (--report-data): freshness unknown")
        )
    if hcl is not None:
        out.check(CHECK_AZURE, "binding", check_runtime_claims(hcl, auth.report.report_data))
        out.claims["azure_runtime_claims_sha256"] = hashlib.sha256(hcl.runtime_claims).hexdigest()
    if policy is None:
        out.skip((CHECK_POLICY,), "appraise", "no policy given")
        out.warnings.append(
            Reason(NOT_APPRAISED, "authentic, but no reference values were appraised (--policy)")
        )
        return out.build(KIND)
    out.check(CHECK_POLICY, "appraise", appraise_report(policy, auth))
    return out.build(KIND)
