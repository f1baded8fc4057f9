"""Stages 2-4 of ``verify_tdx_offline``: revocation, collateral and TCB status of a quote.

Run only for an authenticated quote, each check reported (``offline.py`` runs the
others):

2. ``revocation``: the root CA CRL (signed by the pinned root, fresh, the PCK CA
   and TCB Signing certificates not listed) and the PCK CRL (signed by the PCK
   CA, fresh, the PCK not listed);
3. ``collateral``: the TCB signing chain to the pinned root (and that it is the
   TCB Signing certificate), then TCB Info and QE Identity: parsed (levels in
   Intel's order, ``level_order.py``), signed, inside their validity windows,
   and each at least the policy's ``min_tcb_evaluation_data_number``
   (``tdx.collateral.tcb_evaluation_number_too_low``);
4. ``tcb``: the TCB status from the authenticated TCB Info (and QE Identity),
   judged by the policy's accepted statuses (default: UpToDate only).

A missing collateral piece is a warning: the result is then at best ``warning``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.evidence.errors import ParseError
from verifier.evidence.report import ReportBuilder
from verifier.evidence.tdx.authenticate import AuthenticatedQuote
from verifier.evidence.tdx.collateral import QeIdentity, TcbInfo, parse_qe_identity, parse_tcb_info
from verifier.evidence.tdx.collateral import check_collateral as check_signed
from verifier.evidence.tdx.level_order import OUT_OF_ORDER
from verifier.evidence.tdx.pki import check_crl, load_crl, parse_pem_certificates, verify_chain
from verifier.evidence.tdx.tcb import evaluate_qe_identity, evaluate_tcb, lower_status
from verifier.evidence.tdx.tcb_policy import TcbPolicy, judge_evaluation_number, judge_tcb
from verifier.verdict import Reason, VerificationError

__all__ = [
    "CHECK_PCK_CRL",
    "CHECK_QE_IDENTITY",
    "CHECK_ROOT_CRL",
    "CHECK_SIGNER",
    "CHECK_TCB",
    "CHECK_TCB_INFO",
    "COLLATERAL_CHECKS",
    "TdxCollateral",
    "collateral_stages",
]

CHECK_ROOT_CRL = "tdx.crl.root"
CHECK_PCK_CRL = "tdx.crl.pck"
CHECK_SIGNER = "tdx.collateral.signer"
CHECK_TCB_INFO = "tdx.collateral.tcb_info"
CHECK_QE_IDENTITY = "tdx.collateral.qe_identity"
CHECK_TCB = "tdx.tcb.status"
COLLATERAL_CHECKS = (
    CHECK_ROOT_CRL,
    CHECK_PCK_CRL,
    CHECK_SIGNER,
    CHECK_TCB_INFO,
    CHECK_QE_IDENTITY,
    CHECK_TCB,
)


@dataclass(frozen=True, slots=True)
class TdxCollateral:
    """Collateral as served by Intel PCS (each piece optional: a missing one is a warning)."""

    tcb_info: bytes | None = None
    qe_identity: bytes | None = None
    tcb_signing_chain: bytes | None = None
    root_ca_crl: bytes | None = None
    pck_crl: bytes | None = None


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


def _malformed(exc: ParseError, what: str) -> Reason:
    # Levels out of order get a code of their own: the document is well formed JSON
    # of the right shape, yet its first-match evaluation would not be Intel's.
    code = "tcb_levels_out_of_order" if exc.code == OUT_OF_ORDER else "malformed"
    return Reason(f"tdx.collateral.{code}", f"{what}: {exc}")


def _documents(
    collateral: TdxCollateral,
    signing_key: ec.EllipticCurvePublicKey | None,
    at: datetime,
    policy: TcbPolicy,
    run: ReportBuilder,
) -> tuple[TcbInfo | None, QeIdentity | None]:
    """TCB Info and QE Identity whose signatures verified (stage 3), each checked."""
    tcb_info: TcbInfo | None = None
    qe_identity: QeIdentity | None = None
    facts: dict[str, object] = {}
    for name, data, parser, what, key in (
        (CHECK_TCB_INFO, collateral.tcb_info, parse_tcb_info, "TCB Info", "tcb_info"),
        (
            CHECK_QE_IDENTITY,
            collateral.qe_identity,
            parse_qe_identity,
            "QE Identity",
            "qe_identity",
        ),
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
            run.check(name, "collateral", [_malformed(exc, what)])
            continue
        reasons = check_signed(parsed, signing_key=signing_key, at=at, what=what)
        if not any(r.code == "tdx.collateral.signature_invalid" for r in reasons):
            # Only a signed number is judged (and shown): an unsigned one means nothing.
            reasons += judge_evaluation_number(parsed.evaluation_number, policy, what=what)
            facts[key] = {
                "tcb_evaluation_data_number": parsed.evaluation_number,
                "issue_date": parsed.issue_date.isoformat(),
                "next_update": parsed.next_update.isoformat(),
            }
            if isinstance(parsed, TcbInfo):
                tcb_info = parsed
            else:
                qe_identity = parsed
        run.check(name, "collateral", reasons)
    if facts:
        facts["min_tcb_evaluation_data_number"] = policy.min_evaluation_number
        run.claims["collateral"] = facts
    return tcb_info, qe_identity


def _tcb_stage(
    quote: AuthenticatedQuote,
    tcb_info: TcbInfo,
    qe_identity: QeIdentity | None,
    *,
    at: datetime,
    policy: TcbPolicy,
    run: ReportBuilder,
) -> None:
    result, reasons = evaluate_tcb(tcb_info, quote.pck_tcb, quote.quote.body)
    qe_status = None
    if qe_identity is not None:
        qe_status, qe_reasons = evaluate_qe_identity(
            qe_identity, quote.quote.certification.qe_report
        )
        reasons += qe_reasons
    if result is not None:
        status = result.status if qe_status is None else lower_status(result.status, qe_status)
        judged = replace(result, status=status)
        reasons += judge_tcb(judged, policy, at=at)
        run.claims["tcb"] = {
            "status": status,
            "platform_status": result.status,
            "module_status": result.module_status,
            "qe_status": qe_status,
            "tcb_date": result.tcb_date.isoformat(),
            "advisory_ids": list(result.advisory_ids),
        }
    run.check(CHECK_TCB, "tcb", reasons)


def collateral_stages(
    quote: AuthenticatedQuote,
    collateral: TdxCollateral | None,
    *,
    at: datetime,
    pins: frozenset[bytes],
    policy: TcbPolicy,
    run: ReportBuilder,
) -> None:
    """Stages 2-4 (module docstring) for ``quote`` at ``at``, recorded in ``run``.

    ``pins``: whose key the quote's root may be (as for the PCK chain); ``policy``:
    the TCB part of the TDX policy (the default without one).
    """
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
    signer = _signer(quote, collateral, at, run, pins)
    _revocation(quote, collateral, at, run, signer)
    key = None if signer is None else signer.public_key()
    signing_key = key if isinstance(key, ec.EllipticCurvePublicKey) else None
    tcb_info, qe_identity = _documents(collateral, signing_key, at, policy, run)
    if tcb_info is None:
        run.skip((CHECK_TCB,), "tcb", "no authenticated TCB Info")
        run.warnings.append(Reason("tdx.tcb.not_evaluated", "TCB status unknown"))
        return
    _tcb_stage(quote, tcb_info, qe_identity, at=at, policy=policy, run=run)
