"""`weightgate evidence verify snp`: one AMD SEV-SNP report, offline, from files.

The checks live in the library (``verifier.evidence.snp.offline``); this module
turns options into its inputs and prints its report. Files, bad input (exit 2)
and exit statuses are handled as for every offline command (``verifier.cli_inputs``).
"""

from __future__ import annotations

import argparse
from functools import partial
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
    from verifier.evidence.snp.chain import AmdRoots
    from verifier.evidence.snp.crl import AmdCrl
    from verifier.evidence.snp.policy import SnpPolicy

__all__ = ["add_snp_command", "run_snp_command"]

# A report is 1184 bytes (2.4 KB hex, 2.6 KB Azure HCL), a certificate bundle a few
# KB, a policy a few KB: 1 MiB bounds every input.
MAX_INPUT_BYTES = 1024 * 1024
MAX_TRUST_FILES = 32  # one ARK (and ASK/ASVK) file per product line and key kind

_SNP_HELP = """\
Verify one AMD SEV-SNP attestation report as the verifier would, from files,
with no network:

  --report      the ATTESTATION_REPORT: raw 1184 bytes (/dev/sev-guest, snpguest),
                hex, or an Azure CVM HCL report (HCLA header; its runtime claims
                must hash to REPORT_DATA)
  --vcek        the VCEK or VLEK certificate, DER or PEM (KDS /vcek/v1/...); a PEM
                may go on with the ASK/ASVK and ARK (Azure's bundle)
  --chain       ASK (or ASVK for a VLEK) and ARK, PEM (KDS cert_chain); the ARK is
                used only if its SHA-256 is AMD's pinned one for its product line
  --trust-dir   a directory of AMD ARK PEM files (ASK/ASVK may sit beside them),
                each ARK checked against its pin; then ARKs in --vcek/--chain are
                ignored
  --report-data the REPORT_DATA expected (hex, zero-padded to 64 bytes): the
                nonce binding. Without it freshness is not checked (a warning)
  --policy      POLICY.json (verifier/evidence/snp/policy.py): {"version": 1,
                "allowed_measurements": [...], "min_tcb": {"Milan": {...}}, ...}.
                Without it the report is only authenticated and the result is at
                best a warning (snp.policy.not_appraised)
  --crl         an AMD CRL, DER (KDS /vcek/v1/<line>/crl, /vlek/v1/<line>/crl);
                repeatable. Then the chain's product line needs a current CRL
                signed by its pinned ARK, and a listed ASK/ASVK (or VCEK/VLEK)
                is rejected (snp.cert.revoked; snp.crl.missing, .stale,
                .untrusted). Without --crl revocation is not checked: the
                check snp.revocation is not_run and claims say so (not yet
                with --azure-evidence)
  --at          ISO 8601 time to check certificate validity at (default now):
                VLEKs live one year; CRLs are current at it or stale

Azure confidential VMs: --azure-evidence FILE instead of --report and --vcek,
the vTPM evidence JSON (trustee az-snp-vtpm v2: TPM quote, PCRs, HCL report,
VCEK); give --chain or --trust-dir for the ASK and ARK. Verified: TPM quote
signed by the runtime claims' HCLAkPub -> claims digest == REPORT_DATA -> VCEK ->
pinned ARK; --nonce HEX is the quote's expected extraData (freshness; without it
the warning snp.azure.nonce_not_checked).

Stages: parse, authenticate (VCEK/VLEK -> ASK/ASVK -> pinned ARK of the product
line the certificate names, report signature, TCB == certificate SPLs, CHIP_ID ==
hwID), binding (REPORT_DATA, Azure runtime claims), appraise (policy; every
violation is listed). --json prints one object: {"kind", "verdict", "reasons",
"checks_run", "checks", "claims"}.

""" + exit_help("no --policy, no --report-data or --nonce")


def add_snp_command(kinds: Any) -> None:
    """Register ``snp`` beside ``tpm`` under ``evidence verify``."""
    snp = add_described_parser(
        kinds,
        "snp",
        help="an AMD SEV-SNP report (VCEK/VLEK chain to pinned ARKs, policy)",
        description=_SNP_HELP,
    )
    source = snp.add_mutually_exclusive_group(required=True)
    source.add_argument("--report", type=Path, metavar="REPORT")
    source.add_argument(
        "--azure-evidence", type=Path, metavar="FILE", help="Azure SNP vTPM evidence JSON"
    )
    snp.add_argument("--vcek", type=Path, metavar="VCEK", help="VCEK or VLEK (with --report)")
    snp.add_argument("--chain", type=Path, metavar="ASK_ARK.pem", help="ASK/ASVK and ARK")
    snp.add_argument("--trust-dir", type=Path, metavar="DIR", help="AMD ARK PEM files")
    snp.add_argument("--report-data", metavar="HEX", help="the expected REPORT_DATA")
    snp.add_argument("--nonce", metavar="HEX", help="the expected TPM quote nonce (Azure)")
    snp.add_argument("--policy", type=Path, metavar="POLICY.json", help="reference values")
    snp.add_argument(
        "--crl", type=Path, action="append", metavar="CRL", help="AMD CRL (repeatable)"
    )
    snp.add_argument("--at", metavar="ISO-TIME", help="evaluate validity at this time")
    snp.add_argument("--json", action="store_true", help="print one JSON object")


def _read(path: Path, what: str) -> bytes:
    return read_input(path, what, MAX_INPUT_BYTES)


def _report_data(text: str | None, option: str = "--report-data") -> bytes | None:
    """REPORT_DATA and TPM extraData (a TPM2B_DATA) both hold 1-64 bytes here."""
    if text is None:
        return None
    value = parse_hex(option, text)
    if not 1 <= len(value) <= 64:
        raise UsageError(f"{option}: {len(value)} bytes; 1-64 expected")
    return value


def _trust_dir(directory: Path) -> tuple[AmdRoots, list[x509.Certificate]]:
    """The pinned ARKs of ``directory``, and any ASK/ASVK beside them."""
    from verifier.evidence.errors import ParseError  # noqa: PLC0415
    from verifier.evidence.snp.certs import load_certificates  # noqa: PLC0415
    from verifier.evidence.snp.chain import RootError, load_amd_roots  # noqa: PLC0415

    if not directory.is_dir():
        raise UsageError(f"--trust-dir {directory}: not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix in {".pem", ".crt"} and p.is_file())
    if not files or len(files) > MAX_TRUST_FILES:
        raise UsageError(f"--trust-dir {directory}: 1-{MAX_TRUST_FILES} .pem files expected")
    certificates: list[x509.Certificate] = []
    for path in files:
        parse = partial(load_certificates, what=str(path))
        certificates += parse_input(path, "trust file", MAX_INPUT_BYTES, parse, ParseError)
    try:
        roots = load_amd_roots(c for c in certificates if c.issuer == c.subject)
    except RootError as exc:
        raise UsageError(f"--trust-dir {directory}: {exc}") from None
    if not roots.arks:
        raise UsageError(f"--trust-dir {directory}: no AMD ARK found")
    return roots, [c for c in certificates if c.issuer != c.subject]


def _chain(args: argparse.Namespace, key: bytes | None) -> tuple[AmdRoots | None, bytes | None]:
    """The pinned roots (--trust-dir) and the chain bytes (--chain, plus the trust
    directory's ASK/ASVK)."""
    from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415

    chain = None if args.chain is None else _read(args.chain, "certificate chain")
    roots = None
    if args.trust_dir is not None:
        roots, intermediates = _trust_dir(args.trust_dir)
        # The trust directory's ASK/ASVK only add candidates: each is still verified
        # against the pinned ARK, exactly like one from --chain.
        extra = b"".join(c.public_bytes(Encoding.PEM) for c in intermediates)
        chain = (chain or b"") + extra if extra else chain
    elif chain is None and (key is None or key.count(b"-----BEGIN CERTIFICATE-----") < 3):
        raise UsageError(
            "give --chain (ASK/ASVK + ARK, as KDS serves cert_chain) or --trust-dir: "
            "the ASK and ARK are never fetched"
        )
    return roots, chain


def _crls(paths: list[Path] | None) -> list[AmdCrl] | None:
    """``--crl`` files, parsed (exit 2 naming a file that is not a CRL); None: none given."""
    from verifier.evidence.errors import ParseError  # noqa: PLC0415
    from verifier.evidence.snp.crl import MAX_CRL_BYTES, load_crl  # noqa: PLC0415
    from verifier.evidence.snp.crl_files import MAX_CRL_FILES  # noqa: PLC0415

    if paths is None:
        return None
    if len(paths) > MAX_CRL_FILES:
        raise UsageError(f"--crl: {len(paths)} files, at most {MAX_CRL_FILES}")
    return [
        parse_input(path, "CRL", MAX_CRL_BYTES, partial(load_crl, source=str(path)), ParseError)
        for path in paths
    ]


def _policy(args: argparse.Namespace) -> SnpPolicy | None:
    from verifier.evidence.snp.policy import PolicyError, load_policy  # noqa: PLC0415

    if args.policy is None:
        return None
    return parse_input(args.policy, "policy", MAX_INPUT_BYTES, load_policy, PolicyError)


def _verify_azure(args: argparse.Namespace) -> EvidenceReport:
    from verifier.evidence.snp.azure_vtpm import verify_azure_snp_vtpm  # noqa: PLC0415

    if args.crl is not None:
        raise UsageError("--crl is not yet supported with --azure-evidence")
    for option, value in (("--vcek", args.vcek), ("--report-data", args.report_data)):
        if value is not None:
            # The VCEK is in the evidence; REPORT_DATA is the claims' digest on Azure.
            raise UsageError(f"{option} does not apply to --azure-evidence")
    at = parse_at(args.at)
    nonce = _report_data(args.nonce, "--nonce")
    evidence = _read(args.azure_evidence, "Azure evidence")
    roots, chain = _chain(args, None)
    return verify_azure_snp_vtpm(
        evidence, chain=chain, roots=roots, policy=_policy(args), expected_nonce=nonce, at=at
    )


def _verify(args: argparse.Namespace) -> EvidenceReport:
    from verifier.evidence.snp.offline import SnpEvidence, verify_snp_offline  # noqa: PLC0415

    if args.azure_evidence is not None:
        return _verify_azure(args)
    if args.vcek is None:
        raise UsageError("--report needs --vcek (the VCEK or VLEK certificate)")
    if args.nonce is not None:
        raise UsageError("--nonce is the TPM quote nonce of --azure-evidence; use --report-data")
    at = parse_at(args.at)
    expected = _report_data(args.report_data)
    report = _read(args.report, "report")
    key = _read(args.vcek, "VCEK/VLEK")
    roots, chain = _chain(args, key)
    policy = _policy(args)
    crls = _crls(args.crl)
    return verify_snp_offline(
        SnpEvidence(report=report, key_certificates=key, chain=chain),
        roots=roots,
        policy=policy,
        expected_report_data=expected,
        at=at,
        crls=crls,
    )


def run_snp_command(args: argparse.Namespace) -> int:
    return run_report(lambda: _verify(args), render_snp, as_json=args.json)


def render_snp(report: EvidenceReport) -> str:
    """The generic report, then the SNP claims a person checks first."""
    from verifier.evidence_render import render_report  # noqa: PLC0415

    lines = [render_report(report)]
    claims = report.claims
    if "measurement" in claims:
        product = claims.get("product_name", "product unknown")
        key = claims.get("key", "key unverified")
        lines.append(
            f"report: v{claims['version']}, {product}, {key}, VMPL {claims['vmpl']}, "
            f"policy {claims['policy']['raw']} (debug {claims['policy']['debug_allowed']})"
        )
        lines.append(f"measurement: {claims['measurement']}")
        lines.append(f"report_data: {claims['report_data']}")
        for name, tcb in claims.get("tcb", {}).items():
            parts = ", ".join(f"{k} {v}" for k, v in tcb.items() if k != "raw")
            lines.append(f"tcb {name}: {tcb['raw']} ({parts})")
        revocation = claims.get("revocation")
        if revocation is not None:
            checked = "checked" if revocation["checked"] else "NOT checked"
            lines.append(f"revocation: {checked}: {revocation['detail']}")
    azure = claims.get("azure")
    if azure is not None:
        ak = azure["ak"]
        lines.append(f"azure vTPM AK: {ak['kid']} RSA-{ak['bits']} spki sha256 {ak['spki_sha256']}")
        if "tpm_nonce" in azure:
            lines.append(f"azure TPM quote nonce: {azure['tpm_nonce']}")
    return "\n".join(lines)
