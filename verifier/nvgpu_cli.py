"""`weightgate evidence verify nvgpu` and `weightgate reference import-rim`: NVIDIA, offline.

The checks live in the library (``verifier.evidence.nvidia.offline`` and
``offline_rims``); this module reads files, maps bad input to exit 2 (one line,
no traceback) and prints. Exit statuses as for ``evidence verify tpm``: 0
affirming, 1 rejected, 2 unreadable input or bad usage, 3 accepted with warnings.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
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
    usage_exit,
)
from verifier.evidence.report import EXIT_REJECTED

if TYPE_CHECKING:
    from cryptography import x509

    from verifier.evidence.nvidia.report_files import EvidenceEntry
    from verifier.evidence.report import EvidenceReport

__all__ = [
    "add_import_rim_command",
    "add_nvgpu_command",
    "run_import_rim_command",
    "run_nvgpu_command",
]

# The evidence JSON is bounded at 4 MiB (report_files.MAX_EVIDENCE_JSON_SIZE); a
# hex report is about 14 KB and a PEM chain 5 KB, so 4 MiB bounds every input.
MAX_INPUT_BYTES = 4 * 1024 * 1024
DEFAULT_OCSP_MAX_AGE = timedelta(days=7)

_NVGPU_HELP = f"""\
Verify the GPUs and NVSwitches of one host as the verifier would, from files,
with no network:

  --evidence   NVIDIA's evidence JSON: [{{"arch", "nonce", "evidence",
               "certificate"}}, ...], one object per device (base64 of the hex
               report and of the PEM chain), as nvattest / NRAS take it; or
  --report     one device's report as hex text (attestationReport.txt) or raw
               bytes, with
  --chain      its PEM certificate chain, leaf first (gpuAkCertChain.txt)
  --nonce      the nonce the verifier issued, hex (32 bytes): once for every
               device, or repeated once per device in file order. The file's
               own "nonce" field is never trusted
  --rim-store  a store filled by `weightgate reference import-rim`; RIMs are
               looked up by NVIDIA's RIM id (NV_GPU_DRIVER_GH100_545.00, ...),
               and of several contents under one id the one whose signing
               path stays valid longest at --at is used (the output names it)
  --trust-dir  a directory holding NVIDIA's Device Identity CA and RIM root (PEM),
               each checked against the pins in weightgate (anything else refused);
               or --device-root and --rim-root, the two files, checked likewise
  --policy     POLICY.json: {{"version": 1, "min_driver_version": "550.54.15",
               "min_vbios_version": "96.00.5e.00.01", "allowed_rim_ids": [...],
               "allowed_cc_states": ["on"], "min_switch_bios_version", "require_ppcie"}}
  --cc-state   the confidential-computing mode NVML reported: on, devtools,
               ppcie or off (the report itself does not state it)
  --ocsp DIR   cached OCSP responses (an OcspCache directory) for every device
               chain and RIM signing chain; or --ocsp-skip: revocation is not
               checked and the result is at best a warning (nvidia.ocsp.not_checked)
  --at         ISO 8601 time to evaluate certificates and RIMs at (default now):
               NVIDIA's sample RIMs have expired

Per device (gpu0, gpu1, ..., nvswitch0, ...): parse, device chain to the pinned
root, report signature, nonce, FWID; then RIMs, measurements, versions, policy;
then OCSP. Every device is verified (no early stop); the host affirms only if
all do. --json prints one object: {{"kind", "verdict", "reasons", "checks_run",
"checks", "claims": {{"devices": [...], "rims": [...]}}}}.

{exit_help("e.g. --ocsp-skip: revocation not checked")}"""

_IMPORT_HELP = """\
Verify NVIDIA RIMs (SWID XML with XML-DSig) and store them for offline GPU
verification. Each FILE is verified at --at (default now) against --rim-root
before anything is stored, then filed under its NVIDIA RIM id, taken from
--rim-id (one FILE only), from NVIDIA's file name (NV_GPU_DRIVER_GH100_550.144.03.xml,
1010_0200_882_96005E0001_PROD.swidtag, ..._NV_SWITCH_BIOS_...xml) or, for driver
RIMs, from the signed content; an id whose chip or version disagrees with the
signed content is refused. Prints per file: stored, already present, or refused
with the reason. The store keeps every content under an id (NVIDIA reissues RIMs).

exit status: 0 every file stored or present, 1 some file refused, 2 bad usage."""


def add_nvgpu_command(kinds: Any) -> None:
    """Register ``nvgpu`` beside ``tpm`` under ``evidence verify``."""
    nvgpu = add_described_parser(
        kinds,
        "nvgpu",
        help="NVIDIA GPUs and NVSwitches (SPDM reports, chains, RIMs, OCSP)",
        description=_NVGPU_HELP,
    )
    source = nvgpu.add_mutually_exclusive_group(required=True)
    source.add_argument("--evidence", type=Path, metavar="EVIDENCE.json", help="evidence JSON")
    source.add_argument("--report", type=Path, metavar="REPORT", help="hex or raw report")
    nvgpu.add_argument("--chain", type=Path, metavar="CHAIN.pem", help="with --report")
    nvgpu.add_argument(
        "--nonce", action="append", required=True, metavar="HEX", help="once, or per device"
    )
    nvgpu.add_argument("--rim-store", type=Path, required=True, metavar="DIR")
    nvgpu.add_argument(
        "--trust-dir",
        type=Path,
        metavar="DIR",
        help="NVIDIA's Device Identity CA and RIM root (PEM files; each must match the pins "
        "in weightgate); instead of --device-root and --rim-root",
    )
    nvgpu.add_argument("--device-root", type=Path, metavar="PEM")
    nvgpu.add_argument("--rim-root", type=Path, metavar="PEM")
    nvgpu.add_argument(
        "--allow-other-roots",
        action="store_true",
        help="accept roots other than NVIDIA's pinned ones (test roots, simulators)",
    )
    nvgpu.add_argument("--policy", type=Path, required=True, metavar="POLICY.json")
    nvgpu.add_argument(
        "--cc-state", required=True, choices=("on", "devtools", "ppcie", "off"), metavar="STATE"
    )
    ocsp = nvgpu.add_mutually_exclusive_group(required=True)
    ocsp.add_argument("--ocsp", type=Path, metavar="DIR", help="cached OCSP responses")
    ocsp.add_argument(
        "--ocsp-skip", action="store_true", help="do not check revocation (a warning, exit 3)"
    )
    nvgpu.add_argument(
        "--ocsp-max-age-days",
        type=float,
        default=DEFAULT_OCSP_MAX_AGE.days,
        metavar="DAYS",
        help="oldest OCSP response accepted (default %(default)s)",
    )
    nvgpu.add_argument("--at", metavar="ISO-TIME", help="evaluate validity at this time")
    nvgpu.add_argument("--json", action="store_true", help="print one JSON object")


def add_import_rim_command(reference_commands: Any) -> None:
    """Register ``import-rim`` under ``reference``."""
    rim = add_described_parser(
        reference_commands,
        "import-rim",
        help="verify NVIDIA RIM files and store them for offline GPU verification",
        description=_IMPORT_HELP,
    )
    rim.add_argument("files", type=Path, nargs="+", metavar="FILE")
    rim.add_argument("--store", type=Path, required=True, metavar="DIR", help="RIM store (0700)")
    rim.add_argument("--rim-root", type=Path, metavar="PEM", help="NVIDIA RIM root (required; PEM)")
    rim.add_argument(
        "--allow-other-rim-root",
        action="store_true",
        help="accept a root other than NVIDIA's pinned one (test roots)",
    )
    rim.add_argument("--rim-id", metavar="ID", help="NVIDIA RIM id of the single FILE")
    rim.add_argument("--at", metavar="ISO-TIME", help="verify at this time (default now)")
    rim.add_argument("--json", action="store_true", help="print one JSON object")


def _read(path: Path, what: str) -> bytes:
    return read_input(path, what, MAX_INPUT_BYTES)


def _store(directory: Path, roots: list[x509.Certificate]) -> Any:
    from verifier.evidence.nvidia.rim_store import FileRimStore, RimStoreError  # noqa: PLC0415

    try:
        return FileRimStore(directory, pinned_roots=roots)
    except (RimStoreError, OSError) as exc:
        raise UsageError(f"RIM store {directory}: {exc}") from None


def run_import_rim_command(args: argparse.Namespace) -> int:
    from verifier.evidence.nvidia.offline_rims import import_rim_file  # noqa: PLC0415

    try:
        if args.rim_id is not None and len(args.files) != 1:
            raise UsageError("--rim-id names the id of one FILE; import files one by one")
        at = parse_at(args.at)
        store = _store(args.store, _rim_roots(args.rim_root, allow_other=args.allow_other_rim_root))
    except UsageError as exc:
        return usage_exit("reference import-rim", exc)
    outcomes = [import_rim_file(store, path, at=at, rim_id=args.rim_id) for path in args.files]
    if args.json:
        document = [
            {
                "file": str(o.path),
                "status": o.status,
                "rim_id": o.rim_id,
                "digest": o.digest,
                "reason": o.reason or None,
            }
            for o in outcomes
        ]
        print(json.dumps({"at": at.isoformat(), "files": document}, indent=2))
    else:
        for o in outcomes:
            if o.status == "refused":
                print(f"refused         {o.path}: {o.reason}")
            else:
                until = "" if o.valid_until is None else f", valid until {o.valid_until:%Y-%m-%d}"
                print(f"{o.status:<15} {o.path}: {o.rim_id} sha256 {o.digest}{until}")
    return EXIT_REJECTED if any(o.status == "refused" for o in outcomes) else 0


def _nonces(texts: list[str], count: int) -> list[bytes]:
    nonces = []
    for text in texts:
        nonce = parse_hex("--nonce", text)
        if len(nonce) != 32:
            raise UsageError(f"--nonce {text!r}: {len(nonce)} bytes; an SPDM nonce is 32")
        nonces.append(nonce)
    if len(nonces) not in (1, count):
        raise UsageError(f"{len(nonces)} --nonce values for {count} devices: give one or {count}")
    return nonces if len(nonces) == count else nonces * count


def _entries(args: argparse.Namespace) -> list[EvidenceEntry]:
    from verifier.evidence.errors import ParseError  # noqa: PLC0415
    from verifier.evidence.nvidia.report_files import (  # noqa: PLC0415
        EvidenceEntry,
        read_evidence_json,
        report_from_hex,
    )

    if args.evidence is not None:
        if args.chain is not None:
            raise UsageError("--chain goes with --report; the evidence JSON holds the chains")
        return parse_input(
            args.evidence, "evidence", MAX_INPUT_BYTES, read_evidence_json, (ParseError, ValueError)
        )
    if args.chain is None:
        raise UsageError("--report needs --chain, the device's PEM certificate chain")
    raw = _read(args.report, "report")
    try:
        report = report_from_hex(raw)
    except (ParseError, ValueError, UnicodeDecodeError):
        report = raw  # raw bytes as NVML returns them; parse_report judges them
    return [EvidenceEntry("GPU", b"", report, _read(args.chain, "certificate chain"))]


def _verify(args: argparse.Namespace) -> EvidenceReport:

    from verifier.evidence.nvidia.gpu_policy import CcState, PolicyError, load_policy  # noqa: PLC0415
    from verifier.evidence.nvidia.ocsp import OcspPolicy  # noqa: PLC0415
    from verifier.evidence.nvidia.ocsp_cache import OcspCache  # noqa: PLC0415
    from verifier.evidence.nvidia.offline import (  # noqa: PLC0415
        OcspInput,
        rim_signing_path_for,
        verify_nvgpu_offline,
    )

    at = parse_at(args.at)
    entries = _entries(args)
    nonces = _nonces(args.nonce, len(entries))
    device_roots, pins, rim_roots = _trust(args)
    policy = parse_input(args.policy, "policy", MAX_INPUT_BYTES, load_policy, PolicyError)
    if args.ocsp is not None:
        if not args.ocsp.is_dir():
            raise UsageError(f"--ocsp {args.ocsp}: not a directory")
        if args.ocsp_max_age_days <= 0:
            raise UsageError("--ocsp-max-age-days must be positive")
        ocsp = OcspInput(
            OcspCache(directory=args.ocsp),
            OcspPolicy(max_age=timedelta(days=args.ocsp_max_age_days)),
        )
    else:
        ocsp = OcspInput(None)
    return verify_nvgpu_offline(
        entries,
        expected_nonce_for=lambda position: nonces[position],
        store=_store(args.rim_store, rim_roots),
        policy=policy,
        cc_state=CcState(args.cc_state),
        device_roots=device_roots,
        rim_roots=rim_roots,
        ocsp=ocsp,
        at=at,
        device_spki_pins=pins,
        rim_signing_paths=rim_signing_path_for(rim_roots, at),
    )


def _trust(
    args: argparse.Namespace,
) -> tuple[list[x509.Certificate], frozenset[bytes], list[x509.Certificate]]:
    from verifier.nvgpu_roots import RootsError, roots_from_options  # noqa: PLC0415

    try:
        return roots_from_options(
            trust_dir=args.trust_dir,
            device_root=args.device_root,
            rim_root=args.rim_root,
            allow_other_roots=args.allow_other_roots,
        )
    except RootsError as exc:
        raise UsageError(str(exc)) from None


def _rim_roots(path: Path | None, *, allow_other: bool) -> list[x509.Certificate]:
    from verifier.nvgpu_roots import RootsError, rim_roots  # noqa: PLC0415

    try:
        return rim_roots(path, allow_other=allow_other)
    except RootsError as exc:
        raise UsageError(str(exc)) from None


def run_nvgpu_command(args: argparse.Namespace) -> int:
    return run_report(lambda: _verify(args), render_nvgpu, as_json=args.json)


def render_nvgpu(report: EvidenceReport) -> str:
    """Per device its verdict, reasons and checks; then the RIMs used; then the host."""
    lines: list[str] = []
    claims = report.claims
    for device in claims["devices"]:
        ueid = "" if device["ueid"] is None else f" (ueid {device['ueid']})"
        lines.append(f"{device['name']}: {device['verdict']}{ueid}")
        lines.extend(f"  reason {r['code']}: {r['message']}" for r in device["reasons"])
        for check in device["checks"]:
            detail = f" ({check['detail']})" if check["detail"] else ""
            status = {"passed": "passed", "failed": "FAILED", "not_run": "not run"}
            lines.append(f"  {status[check['status']]:<8} {check['name']}{detail}")
    for rim in claims["rims"]:
        if rim["digest"] is None:
            lines.append(f"rim {rim['rim_id']}: none in the store verifies at {claims['at']}")
        else:
            lines.append(
                f"rim {rim['rim_id']}: sha256 {rim['digest']} "
                f"(1 of {rim['candidates']} valid, until {rim['valid_until']})"
            )
    verdict = report.verdict
    lines.append(f"host: {verdict.tier.value} ({len(claims['devices'])} devices)")
    lines.extend(f"  {reason}" for reason in verdict.reasons)
    return "\n".join(lines)
