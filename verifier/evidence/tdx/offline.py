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
   QE Identity: TCB levels in Intel's order, signatures, validity windows and
   the policy's minimum ``tcbEvaluationDataNumber``;
4. ``tcb``: the TCB status from the authenticated TCB Info (and QE Identity),
   judged by the policy's accepted statuses (default: UpToDate only);
5. ``ccel`` (with a log): replay into RTMR0-3 equal to the quote's;
6. ``policy``: REPORTDATA against the expected value (when given) and the
   appraisal policy (debug, golden registers).

Stages 2-4 are run by :func:`~verifier.evidence.tdx.collateral_stages.collateral_stages`.

Missing collateral pieces, a missing policy, or a QE Identity not supplied are
warnings: the result is then at best ``warning``, never ``affirming``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from verifier.evidence.errors import ParseError
from verifier.evidence.report import EvidenceReport, ReportBuilder
from verifier.evidence.tdx.authenticate import (
    AUTHENTICATION_CHECKS,
    AuthenticatedQuote,
    authenticate_quote,
)
from verifier.evidence.tdx.ccel import CHECK_CCEL_REPLAY, parse_ccel_log, replay_ccel
from verifier.evidence.tdx.collateral_stages import (
    COLLATERAL_CHECKS,
    TdxCollateral,
    collateral_stages,
)
from verifier.evidence.tdx.pki import INTEL_ROOT_PINS
from verifier.evidence.tdx.policy import CHECK_POLICY, TdxPolicy, appraise_quote
from verifier.evidence.tdx.quote import Quote, parse_quote, strip_zero_padding
from verifier.evidence.tdx.tcb_policy import DEFAULT_TCB_POLICY
from verifier.verdict import Reason, VerificationError

__all__ = ["TdxCollateral", "TdxEvidence", "verify_tdx_offline"]

CHECK_PARSE = "tdx.quote.parse"
CHECK_REPORT_DATA = "tdx.quote.report_data"


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


def verify_tdx_offline(evidence: TdxEvidence) -> EvidenceReport:
    """Run every stage that can run (module docstring) and report all of them."""
    run = ReportBuilder()
    run.claims["at"] = evidence.at.isoformat()
    quote = _quote_stage(evidence, run)
    later = (*COLLATERAL_CHECKS, CHECK_CCEL_REPLAY, CHECK_REPORT_DATA, CHECK_POLICY)
    if quote is None:
        run.skip(later, "quote", "the quote was not authenticated")
        return run.build("tdx")
    collateral_stages(
        quote,
        evidence.collateral,
        at=evidence.at,
        pins=evidence.root_pins,
        policy=DEFAULT_TCB_POLICY if evidence.policy is None else evidence.policy.tcb,
        run=run,
    )

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
