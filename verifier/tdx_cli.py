"""`weightgate evidence verify tdx`: one Intel TDX quote, offline, from files.

The checks live in the library (``verifier.evidence.tdx.offline``); this module
turns options into its inputs and prints its report. Files, bad input (exit 2)
and exit statuses are handled as for every offline command (``verifier.cli_inputs``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.cli_inputs import (
    UsageError,
    add_described_parser,
    exit_help,
    parse_at,
    parse_hex,
    parse_input,
    read_input,
    run_report,
)

if TYPE_CHECKING:
    from cryptography import x509

    from verifier.evidence.report import EvidenceReport
    from verifier.evidence.tdx.offline import TdxCollateral

__all__ = ["ROOT_FILE", "add_tdx_command", "run_tdx_command"]

# The CCEL log area is 256 KiB on TDVF (the largest input); quotes are ~5 KB.
MAX_INPUT_BYTES = 4 * 1024 * 1024
ROOT_FILE = "intel_sgx_root_ca.pem"
_TDX_HELP = """\
Verify one Intel TDX quote (v4 or v5) as the verifier would, from files, with
no network:

  --quote       the quote (raw bytes; zero padding after it is ignored)
  --trust-dir   a directory holding intel_sgx_root_ca.pem, checked against the
                pinned Intel SGX Root CA key; the root in the quote is never used
  --collateral  a directory with Intel PCS collateral: tcb_info.json,
                qe_identity.json, tcb_signing_chain.pem (TCB-Info-Issuer-Chain),
                root_ca_crl.der, pck_crl.der (DER or PEM). A missing piece is
                not checked (a warning); without the directory the TCB status
                is not evaluated (tdx.tcb.not_evaluated, a warning)
  --report-data the REPORTDATA the verifier expects, 64 bytes hex
  --policy      POLICY.json: {"version": 1, "mrtd": [...], "rtmr0".."rtmr3",
                "mrconfigid", "mrowner", "mrownerconfig", "mrseam", "xfam",
                "mrservicetd", "allow_debug", "allow_migratable", "allow_sept_ve",
                "tdattributes", "accepted_tcb_statuses", "out_of_date_grace_days",
                "min_tcb_evaluation_data_number"}
                (verifier/evidence/tdx/policy.py). Without it the quote is
                authenticated, not appraised: a warning
  --ccel        the CC event log area (ACPI CCEL data), replayed into RTMR0-3
  --at          ISO 8601 time to evaluate certificates, CRLs and collateral at

Stages: quote (parse, QE vendor, quote signature, QE report signature, QE
binding, PCK chain), revocation, collateral, tcb, ccel, policy. --json prints
{"kind", "verdict", "reasons", "checks_run", "checks", "claims"}.

""" + exit_help("no policy, collateral missing")


def add_tdx_command(kinds: Any) -> None:
    """Register ``tdx`` beside ``tpm`` under ``evidence verify``."""
    tdx = add_described_parser(
        kinds,
        "tdx",
        help="an Intel TDX quote (DCAP collateral, TCB status, CC event log, policy)",
        description=_TDX_HELP,
    )
    tdx.add_argument("--quote", type=Path, required=True, metavar="QUOTE")
    tdx.add_argument("--trust-dir", type=Path, required=True, metavar="DIR")
    tdx.add_argument("--collateral", type=Path, metavar="DIR")
    tdx.add_argument("--report-data", metavar="HEX")
    tdx.add_argument("--policy", type=Path, metavar="POLICY.json")
    tdx.add_argument("--ccel", type=Path, metavar="LOG")
    tdx.add_argument("--at", metavar="ISO-TIME", help="evaluate validity at this time")
    tdx.add_argument("--json", action="store_true", help="print one JSON object")


def _read(path: Path, what: str) -> bytes:
    return read_input(path, what, MAX_INPUT_BYTES)


def _root(directory: Path) -> x509.Certificate:
    from cryptography import x509  # noqa: PLC0415

    from verifier.evidence.tdx.pki import check_pinned_root  # noqa: PLC0415

    path = directory / ROOT_FILE
    try:
        root = x509.load_pem_x509_certificate(_read(path, "Intel SGX Root CA"))
        check_pinned_root(root)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return root


def _collateral(directory: Path | None) -> TdxCollateral | None:
    from verifier.evidence.tdx.collateral_files import (  # noqa: PLC0415
        CollateralFilesError,
        read_collateral_dir,
    )

    if directory is None:
        return None
    try:
        return read_collateral_dir(directory)
    except CollateralFilesError as exc:
        raise UsageError(f"--collateral {exc}") from None


def _report_data(text: str | None) -> bytes | None:
    if text is None:
        return None
    value = parse_hex("--report-data", text)
    if len(value) != 64:
        raise UsageError(f"--report-data: {len(value)} bytes; REPORTDATA is 64")
    return value


def _verify(args: argparse.Namespace) -> EvidenceReport:
    from verifier.evidence.tdx.offline import TdxEvidence, verify_tdx_offline  # noqa: PLC0415
    from verifier.evidence.tdx.policy import PolicyError, load_policy  # noqa: PLC0415

    policy = None
    if args.policy is not None:
        policy = parse_input(args.policy, "policy", MAX_INPUT_BYTES, load_policy, PolicyError)
    evidence = TdxEvidence(
        quote=_read(args.quote, "quote"),
        root=_root(args.trust_dir),
        at=parse_at(args.at),
        collateral=_collateral(args.collateral),
        policy=policy,
        expected_report_data=_report_data(args.report_data),
        ccel=None if args.ccel is None else _read(args.ccel, "CC event log"),
    )
    return verify_tdx_offline(evidence)


def run_tdx_command(args: argparse.Namespace) -> int:
    return run_report(lambda: _verify(args), _render, as_json=args.json)


def _render(report: EvidenceReport) -> str:
    """Verdict, reasons, every check with its stage, then the main claims."""
    lines = [f"verdict: {report.verdict.tier.value} (tdx)"]
    lines.extend(f"  reason {reason}" for reason in report.verdict.reasons)
    status = {"passed": "passed", "failed": "FAILED", "not_run": "not run"}
    for check in report.checks:
        detail = f" ({check.detail})" if check.detail else ""
        lines.append(f"  {status[check.status]:<8} {check.stage:<10} {check.name}{detail}")
    quote = report.claims.get("quote")
    if quote is not None:
        lines.append(f"quote: v{quote['version']} mrtd {quote['mrtd']} debug {quote['debug']}")
    tcb = report.claims.get("tcb")
    if tcb is not None:
        lines.append(f"tcb: {tcb['status']} (tcbDate {tcb['tcb_date']})")
    return "\n".join(lines)
