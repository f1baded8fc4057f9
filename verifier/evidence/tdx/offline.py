"""``weightgate evidence verify tdx`` as a library: one quote (and collateral) in, one report out.

Stages, in order; a stage that needs an authenticated quote does not run
without one, and nothing is silently passed:

1. ``quote``: zero padding after the declared end is trimmed (counted in the
   claims), the quote parses (``tdx.quote.malformed``), then
   :func:`authenticate_quote` (QE vendor, quote signature, QE report signature,
   QE binding, PCK chain to the pinned root at ``at``);
2. ``revocation``: the root CA CRL (signed by the pinned root, fresh, the PCK CA
   and TCB Signing certificates not listed) and the PCK CRL (signed by the PCK
   CA, fresh, the PCK not listed);
3. ``collateral``: the TCB signing chain to the pinned root, then TCB Info and
   QE Identity signatures and validity windows;
4. ``tcb``: the TCB status from the authenticated TCB Info (and QE Identity),
   judged by the policy's accepted statuses (default: UpToDate only);
5. ``ccel`` (with a log): replay into RTMR0-3 equal to the quote's;
6. ``policy``: REPORTDATA against the expected value (when given) and the
   appraisal policy (debug, golden registers).

Missing collateral pieces, a missing policy, or a QE Identity not supplied are
warnings: the result is then at best ``warning``, never ``affirming``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.evidence.errors import ParseError
from verifier.evidence.report import EvidenceReport, ReportBuilder
from verifier.evidence.tdx.authenticate import (
    AUTHENTICATION_CHECKS,
    AuthenticatedQuote,
    authenticate_quote,
)
from verifier.evidence.tdx.ccel import CHECK_CCEL_REPLAY, parse_ccel_log, replay_ccel
from verifier.evidence.tdx.collateral import QeIdentity, TcbInfo, parse_qe_identity, parse_tcb_info
from verifier.evidence.tdx.collateral import check_collateral as check_signed
from verifier.evidence.tdx.pki import (
    INTEL_ROOT_PINS,
    check_crl,
    load_crl,
    parse_pem_certificates,
    verify_chain,
)
from verifier.evidence.tdx.policy import (
    CHECK_POLICY,
    DEFAULT_TCB_POLICY,
    TdxPolicy,
    appraise_quote,
    judge_tcb,
)
from verifier.evidence.tdx.quote import Quote, parse_quote, strip_zero_padding
from verifier.evidence.tdx.tcb import evaluate_qe_identity, evaluate_tcb, lower_status
from verifier.verdict import Reason, VerificationError

__all__ = ["TdxCollateral", "TdxEvidence", "verify_tdx_offline"]

CHECK_PARSE = "tdx.quote.parse"
CHECK_ROOT_CRL = "tdx.crl.root"
CHECK_PCK_CRL = "tdx.crl.pck"
CHECK_SIGNER = "tdx.collateral.signer"
CHECK_TCB_INFO = "tdx.collateral.tcb_info"
CHECK_QE_IDENTITY = "tdx.collateral.qe_identity"
CHECK_TCB = "tdx.tcb.status"
CHECK_REPORT_DATA = "tdx.quote.report_data"


@dataclass(frozen=True, slots=True)
class TdxCollateral:
    """Collateral as served by Intel PCS (each piece optional: a missing one is a warning)."""

    tcb_info: bytes | None = None
    qe_identity: bytes | None = None
    tcb_signing_chain: bytes | None = None
    root_ca_crl: bytes | None = None
    pck_crl: bytes | None = None


@dataclass(frozen=True, slots=True)
class TdxEvidence:
    """What ``evidence verify tdx`` was given; ``root`` is the pinned Intel SGX Root CA."""

    quote: bytes
    root: x509.Certificate
    at: datetime
    collateral: TdxCollateral | None = None
    policy: TdxPolicy | None = None
    expected_report_data: bytes | None = None
    ccel: bytes | None = None
    # Whose key may be ``root``: Intel's; a simulator's only from an explicit test setting.
    root_pins: frozenset[bytes] = INTEL_ROOT_PINS


def _hex_claims(quote: Quote) -> dict[str, Any]:
    body = quote.body
    claims: dict[str, Any] = {
        "version": quote.header.version,
        "body_type": quote.body_type,
        "tee_tcb_svn": body.tee_tcb_svn.hex(),
        "mrseam": body.mr_seam.hex(),
        "mrsignerseam": body.mr_signer_seam.hex(),
        "seam_attributes": body.seam_attributes.hex(),
        "td_attributes": body.td_attributes.hex(),
        "debug": body.debug,
        "xfam": body.xfam.hex(),
        "mrtd": body.mr_td.hex(),
        "mrconfigid": body.mr_config_id.hex(),
        "mrowner": body.mr_owner.hex(),
        "mrownerconfig": body.mr_owner_config.hex(),
        "rtmrs": [r.hex() for r in body.rtmrs],
        "report_data": body.report_data.hex(),
        "qe_isvsvn": quote.certification.qe_report.isv_svn,
        "authenticated": False,
    }
    if body.tee_tcb_svn2 is not None and body.mr_servicetd is not None:
        claims["tee_tcb_svn2"] = body.tee_tcb_svn2.hex()
        claims["mrservicetd"] = body.mr_servicetd.hex()
    return claims


def _quote_stage(evidence: TdxEvidence, run: ReportBuilder) -> AuthenticatedQuote | None:
    try:
        raw, padding = strip_zero_padding(evidence.quote)
        quote = parse_quote(raw)
    except ParseError as exc:
        run.check(CHECK_PARSE, "quote", [Reason("tdx.quote.malformed", f"{exc.code}: {exc}")])
        run.skip(AUTHENTICATION_CHECKS, "quote", "the quote did not parse")
        return None
    run.check(CHECK_PARSE, "quote", [])
    run.claims["quote"] = {**_hex_claims(quote), "zero_padding": padding}
    try:
        authenticated = authenticate_quote(
            quote, root=evidence.root, at=evidence.at, spki_pins=evidence.root_pins
        )
    except VerificationError as exc:
        failed = next(n for n in AUTHENTICATION_CHECKS if n not in exc.checks_run)
        for name in AUTHENTICATION_CHECKS:
            if name in exc.checks_run:
                run.check(name, "quote", [])
            elif name == failed:
                run.check(name, "quote", [exc.reason])
            else:
                run.skip((name,), "quote", "an earlier quote check failed")
        return None
    for name in AUTHENTICATION_CHECKS:
        run.check(name, "quote", [])
    pck = authenticated.pck_tcb
    run.claims["quote"]["authenticated"] = True
    run.claims["pck"] = {
        "fmspc": pck.fmspc.hex(),
        "pce_id": pck.pce_id.hex(),
        "pce_svn": pck.pce_svn,
        "sgx_tcb_components": list(pck.sgx_tcb_components),
        "sgx_type": pck.sgx_type,
        "issuer": authenticated.pck_path[1].subject.rfc4514_string(),
    }
    return authenticated


def _missing(run: ReportBuilder, name: str, stage: str, what: str) -> None:
    run.skip((name,), stage, f"no {what} supplied")
    run.warnings.append(Reason(f"{name}_missing", f"{what} not supplied: not checked"))


def _revocation(
    quote: AuthenticatedQuote,
    collateral: TdxCollateral,
    at: datetime,
    run: ReportBuilder,
    signer: x509.Certificate | None,
) -> None:
    root, ca, leaf = quote.pck_path[-1], quote.pck_path[1], quote.pck_path[0]
    for name, data, issuer, covered, what in (
        (
            CHECK_ROOT_CRL,
            collateral.root_ca_crl,
            root,
            [ca] + ([signer] if signer is not None else []),
            "root CA",
        ),
        (CHECK_PCK_CRL, collateral.pck_crl, ca, [leaf], "PCK"),
    ):
        if data is None:
            _missing(run, name, "revocation", f"{what} CRL")
            continue
        try:
            crl = load_crl(data)
        except ParseError as exc:
            run.check(name, "revocation", [Reason("tdx.crl.malformed", str(exc))])
            continue
        run.check(
            name, "revocation", check_crl(crl, issuer=issuer, covered=covered, at=at, what=what)
        )


def _signer(
    quote: AuthenticatedQuote,
    collateral: TdxCollateral,
    at: datetime,
    run: ReportBuilder,
    pins: frozenset[bytes],
) -> x509.Certificate | None:
    if collateral.tcb_signing_chain is None:
        if collateral.tcb_info is not None or collateral.qe_identity is not None:
            _missing(run, CHECK_SIGNER, "collateral", "TCB signing chain")
        else:
            run.skip((CHECK_SIGNER,), "collateral", "no TCB Info or QE Identity")
        return None
    try:
        path = verify_chain(
            parse_pem_certificates(collateral.tcb_signing_chain),
            root=quote.pck_path[-1],
            at=at,
            prefix="tdx.collateral.signer",
            spki_pins=pins,
        )
    except ParseError as exc:
        run.check(CHECK_SIGNER, "collateral", [Reason("tdx.collateral.malformed", str(exc))])
        return None
    except VerificationError as exc:
        run.check(CHECK_SIGNER, "collateral", [exc.reason])
        return None
    problem = _not_a_tcb_signer(path)
    if problem is not None:
        run.check(
            CHECK_SIGNER, "collateral", [Reason("tdx.collateral.signer.not_tcb_signing", problem)]
        )
        return None
    run.check(CHECK_SIGNER, "collateral", [])
    return path[0]


def _not_a_tcb_signer(path: tuple[x509.Certificate, ...]) -> str | None:
    """Why ``path`` (signer -> root) is not Intel's TCB Signing certificate, or None.

    Any certificate chaining to the root could otherwise sign collateral: a PCK CA or
    a PCK leaf (whose private keys have been extracted from platforms before). The
    TCB Signing certificate is issued by the root itself, is no CA, and is named so.
    """
    signer = path[0]
    if len(path) != 2:
        return f"{_cn(signer)} is not issued directly by the root"
    try:
        constraints = signer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        return f"{_cn(signer)} is a CA, not the TCB Signing certificate"
    if not _cn(signer).startswith("Intel SGX TCB Signing"):
        return f"{_cn(signer)} is not named Intel SGX TCB Signing"
    return None


def _cn(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()


def _collateral_stages(
    quote: AuthenticatedQuote, evidence: TdxEvidence, run: ReportBuilder
) -> None:
    collateral, at = evidence.collateral, evidence.at
    if collateral is None:
        for name, stage in (
            (CHECK_ROOT_CRL, "revocation"),
            (CHECK_PCK_CRL, "revocation"),
            (CHECK_SIGNER, "collateral"),
            (CHECK_TCB_INFO, "collateral"),
            (CHECK_QE_IDENTITY, "collateral"),
            (CHECK_TCB, "tcb"),
        ):
            run.skip((name,), stage, "no collateral supplied")
        run.warnings.append(Reason("tdx.tcb.not_evaluated", "no collateral: TCB status unknown"))
        return
    signer = _signer(quote, collateral, at, run, evidence.root_pins)
    _revocation(quote, collateral, at, run, signer)
    key = None if signer is None else signer.public_key()
    signing_key = key if isinstance(key, ec.EllipticCurvePublicKey) else None
    tcb_info: TcbInfo | None = None
    qe_identity: QeIdentity | None = None
    for name, data, parser, what in (
        (CHECK_TCB_INFO, collateral.tcb_info, parse_tcb_info, "TCB Info"),
        (CHECK_QE_IDENTITY, collateral.qe_identity, parse_qe_identity, "QE Identity"),
    ):
        if data is None:
            _missing(run, name, "collateral", what)
            continue
        if signing_key is None:
            run.skip((name,), "collateral", "the TCB signing chain was not verified")
            continue
        try:
            parsed = parser(data)
        except ParseError as exc:
            run.check(name, "collateral", [Reason("tdx.collateral.malformed", f"{what}: {exc}")])
            continue
        reasons = check_signed(parsed, signing_key=signing_key, at=at, what=what)
        run.check(name, "collateral", reasons)
        if not any(r.code == "tdx.collateral.signature_invalid" for r in reasons):
            if isinstance(parsed, TcbInfo):
                tcb_info = parsed
            else:
                qe_identity = parsed
    if tcb_info is None:
        run.skip((CHECK_TCB,), "tcb", "no authenticated TCB Info")
        run.warnings.append(Reason("tdx.tcb.not_evaluated", "TCB status unknown"))
        return
    result, reasons = evaluate_tcb(tcb_info, quote.pck_tcb, quote.quote.body)
    qe_status = None
    if qe_identity is not None:
        qe_status, qe_reasons = evaluate_qe_identity(
            qe_identity, quote.quote.certification.qe_report
        )
        reasons += qe_reasons
    if result is not None:
        status = result.status if qe_status is None else lower_status(result.status, qe_status)
        tcb_policy = DEFAULT_TCB_POLICY if evidence.policy is None else evidence.policy.tcb
        judged = replace(result, status=status)
        reasons += judge_tcb(judged, tcb_policy, at=at)
        run.claims["tcb"] = {
            "status": status,
            "platform_status": result.status,
            "module_status": result.module_status,
            "qe_status": qe_status,
            "tcb_date": result.tcb_date.isoformat(),
            "advisory_ids": list(result.advisory_ids),
        }
    run.check(CHECK_TCB, "tcb", reasons)


def verify_tdx_offline(evidence: TdxEvidence) -> EvidenceReport:
    """Run every stage that can run (module docstring) and report all of them."""
    run = ReportBuilder()
    run.claims["at"] = evidence.at.isoformat()
    quote = _quote_stage(evidence, run)
    later = (
        CHECK_ROOT_CRL,
        CHECK_PCK_CRL,
        CHECK_SIGNER,
        CHECK_TCB_INFO,
        CHECK_QE_IDENTITY,
        CHECK_TCB,
        CHECK_CCEL_REPLAY,
        CHECK_REPORT_DATA,
        CHECK_POLICY,
    )
    if quote is None:
        run.skip(later, "quote", "the quote was not authenticated")
        return run.build("tdx")
    _collateral_stages(quote, evidence, run)

    if evidence.ccel is None:
        run.skip((CHECK_CCEL_REPLAY,), "ccel", "no --ccel")
    else:
        try:
            log = parse_ccel_log(evidence.ccel)
        except ParseError as exc:
            run.check(CHECK_CCEL_REPLAY, "ccel", [Reason("tdx.ccel.malformed", str(exc))])
        else:
            run.check(CHECK_CCEL_REPLAY, "ccel", replay_ccel(log, quote))
            run.claims["ccel"] = {"events": len(log.events)}

    expected = evidence.expected_report_data
    if expected is None:
        run.skip((CHECK_REPORT_DATA,), "policy", "no expected REPORTDATA given")
    else:
        same = hmac.compare_digest(quote.quote.body.report_data, expected)
        run.check(
            CHECK_REPORT_DATA,
            "policy",
            []
            if same
            else [Reason("tdx.quote.report_data_mismatch", "REPORTDATA is not the expected value")],
        )
    if evidence.policy is None:
        run.skip((CHECK_POLICY,), "policy", "no --policy")
        run.warnings.append(
            Reason("tdx.policy.not_appraised", "no policy: authenticated, not appraised")
        )
    else:
        run.check(
            CHECK_POLICY,
            "policy",
            appraise_quote(quote, evidence.policy, expected_report_data=None),
        )
    return run.build("tdx")
