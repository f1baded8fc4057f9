"""`weightgate evidence verify tpm|replay|inspect`: offline evidence tools.

For operators debugging a host and for our own checks: they read files in the
formats tpm2-tools writes, run the verifier's own checks (same reason codes), and
need no verifier connection. The checks live in the library
(``verifier.evidence.tpm.offline_verify`` / ``offline_replay`` / ``offline_ima`` /
``inspect_file``);
this module reads files, maps usage errors to exit 2 and prints. Exit statuses:
0 affirming, 1 rejected, 2 unreadable input or bad usage (one line, naming the
file), 3 accepted with warnings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.cli_inputs import (
    UsageError,
    add_described_parser,
    exit_help,
    parse_hex,
    parse_input,
    read_input,
    run_report,
    usage_exit,
)
from verifier.evidence.report import EXIT_REJECTED, EvidenceReport
from verifier.nvgpu_cli import add_nvgpu_command, run_nvgpu_command
from verifier.operator_cli import CliError, parse_pcrs_json
from verifier.snp_cli import add_snp_command, run_snp_command
from verifier.tdx_cli import add_tdx_command, run_tdx_command

if TYPE_CHECKING:
    from verifier.evidence.tpm.boot_reference import BootReference
    from verifier.evidence.tpm.ima_policy import RuntimePolicy

__all__ = ["add_evidence_commands", "run_evidence_command"]

# As large as any evidence file: IMA lists are bounded at 128 MiB (ima.MAX_LIST_SIZE),
# event logs at 16 MiB, quotes at 1 KiB.
MAX_INPUT_BYTES = 128 * 1024 * 1024

_EXIT_HELP = exit_help("e.g. a PEM AK, whose TPM attributes are unknown")

_VERIFY_TPM_HELP = f"""\
Verify one TPM quote as the verifier would, from files:

  --ak        the enrolled attestation key: TPM2B_PUBLIC (tpm2_createak -u),
              TPMT_PUBLIC (tpm2_readpublic -f tpmt) or a PEM public key or
              certificate (then the AK's TPM attributes are unknown: checked
              as far as possible, and the result is at best a warning)
  --message   the quote: marshalled TPMS_ATTEST (tpm2_quote -m)
  --signature the quote's TPMT_SIGNATURE (tpm2_quote -s, default format)
  --nonce     the qualifying data the verifier issued, in hex (tpm2_quote -q)
  --pcrs      PCR values read from the TPM at quote time, PCRS.json:
              {{"pcrs": {{"sha256": {{"0": "<hex>", ...}}}}}} (weightgate-agent
              read-pcrs); the quote's pcrDigest must match them. Without it the
              digest is not checked (a warning)
  --eventlog  a UEFI measured-boot log (binary_bios_measurements): replayed per
              bank, every replayed PCR must equal its --pcrs value (the quoted
              ones first), then its structure and event data are checked. Named
              vendor quirks are warnings; a SHA-1-only log is refused unless
              --boot-reference allows it
  --boot-reference a measured-boot reference (JSON, as `reference propose
              --from-eventlog --dry-run` prints and `reference show-boot` shows):
              the facts read from the log (Secure Boot, PK/KEK/db/dbx, boot
              applications, kernel command line, kernel/initrd, firmware) are
              appraised against it as the verifier does; it says which quirks and
              whether a SHA-1-only log are permitted. Needs --eventlog
  --ima       an IMA runtime measurement list (binary_runtime_measurements or
              ascii_runtime_measurements, recognised by content). The quote must
              cover PCR10: the WHOLE list must replay to the quoted PCR10 of every
              bank that quotes it. A list read after the quote is usually longer
              and is then rejected (the message says how many first entries match):
              read the list right after quoting. Entry 0 (boot_aggregate) is checked
              against PCRs 0-7 or 0-9 of its bank, quoted or else from --pcrs (then
              a warning), or reported as not checked
  --ima-policy a runtime policy (JSON: {{"version": 1, "digests": {{path: [digest]}},
              "excludes", "keyrings", "buffers", "verification_keys", "violations"}})
              to appraise every replayed entry against; violations are warnings,
              or, with "violations": "tolerate", no finding (counted in the claims)
  --reference reference PCR values (PCRS.json format) to appraise against

Checks run in stages (quote, eventlog-replay, eventlog-policy, ima-replay,
ima-policy, reference); a stage that needs a failed one does not run. The output
lists every check and every reason; --json prints one JSON object:
{{"kind", "verdict", "reasons": [{{"code", "message"}}], "checks_run", "checks", "claims"}}.

{_EXIT_HELP}"""

_REPLAY_HELP = f"""\
Replay a UEFI event log (--eventlog: binary_bios_measurements, SHA-1 legacy or
crypto-agile) in every bank it declares, with the TPM's rules (PCR0 starts at
the StartupLocality or H-CRTM value, EV_NO_ACTION is never extended), or an IMA
list (--ima: binary or ASCII runtime measurements) into PCR10 of every bank of
--pcrs (sha1, sha256, sha384, sha512 without it), and print the replayed PCRs.
With --pcrs (PCRS.json), compare each replayed PCR with the TPM's value: match,
MISMATCH, or "no value given" for PCRs the file lacks.

{_EXIT_HELP} Without --pcrs nothing is compared: 0 if the log replays."""

_INSPECT_HELP = """\
Recognise an evidence file and print its decoded fields, without verifying
anything: TPMS_ATTEST quote (magic, type, signer, extra data, clock, firmware,
PCR selection, digest), TPMT_SIGNATURE, TPM2B_PUBLIC / TPMT_PUBLIC, PEM or DER
public key / certificate, UEFI event log (format, banks, and per event: PCR,
type, digests, data summary), IMA runtime list, binary or ASCII (byte order,
entry count, templates, violations, boot_aggregate, the first entries),
PCRS.json. Anything else is "unrecognised", with
a hint. Exit status: 0 recognised, 1 recognised but malformed or unrecognised,
2 unreadable."""


def add_evidence_commands(commands: Any) -> None:
    """Register ``evidence`` on the top-level subparsers."""
    evidence = commands.add_parser(
        "evidence",
        help="offline evidence tools: verify a TPM quote, replay a boot log, inspect a file",
        description="Offline evidence tools; they read files and need no verifier.",
    )
    sub = evidence.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    verify = sub.add_parser("verify", help="verify evidence as the verifier would")
    kinds = verify.add_subparsers(dest="kind", required=True, metavar="KIND")
    tpm = add_described_parser(
        kinds,
        "tpm",
        help="a TPM quote set (AK, quote, signature, nonce, PCRs, event log, IMA list)",
        description=_VERIFY_TPM_HELP,
    )
    tpm.add_argument("--ak", type=Path, required=True, metavar="AK", help="AK public key")
    tpm.add_argument("--message", type=Path, required=True, metavar="QUOTE.attest")
    tpm.add_argument("--signature", type=Path, required=True, metavar="QUOTE.sig")
    tpm.add_argument("--nonce", required=True, metavar="HEX", help="the nonce issued, as hex")
    tpm.add_argument("--pcrs", type=Path, metavar="PCRS.json", help="PCR values read at quote time")
    tpm.add_argument("--eventlog", type=Path, metavar="LOG", help="UEFI event log to replay")
    tpm.add_argument("--ima", type=Path, metavar="IMA_LOG", help="IMA list to replay (PCR10)")
    tpm.add_argument("--ima-policy", type=Path, metavar="POLICY.json", help="IMA runtime policy")
    tpm.add_argument("--reference", type=Path, metavar="REF", help="reference PCRs (PCRS.json)")
    tpm.add_argument(
        "--boot-reference", type=Path, metavar="BOOTREF.json", help="measured-boot reference"
    )
    tpm.add_argument(
        "--allow-sha1",
        action="store_true",
        help="accept SHA-1 quote signatures (refused by default: tpm.quote.weak_hash)",
    )
    tpm.add_argument("--json", action="store_true", help="print one JSON object")
    add_nvgpu_command(kinds)
    add_snp_command(kinds)
    add_tdx_command(kinds)

    replay = add_described_parser(
        sub,
        "replay",
        help="replay a UEFI event log or an IMA list per bank; compare with PCR values",
        description=_REPLAY_HELP,
    )
    logs = replay.add_mutually_exclusive_group(required=True)
    logs.add_argument("--eventlog", type=Path, metavar="LOG", help="UEFI event log")
    logs.add_argument("--ima", type=Path, metavar="IMA_LOG", help="IMA runtime list (PCR10)")
    replay.add_argument("--pcrs", type=Path, metavar="PCRS.json", help="TPM values to compare")
    replay.add_argument("--json", action="store_true", help="print one JSON object")

    inspect = add_described_parser(
        sub,
        "inspect",
        help="recognise an evidence file and print its decoded fields",
        description=_INSPECT_HELP,
    )
    inspect.add_argument("file", type=Path, metavar="FILE")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")


_OTHER_KINDS = {"nvgpu": run_nvgpu_command, "snp": run_snp_command, "tdx": run_tdx_command}


def run_evidence_command(args: argparse.Namespace) -> int:
    if args.subcommand == "inspect":
        return _inspect(args)
    if args.subcommand == "verify" and args.kind in _OTHER_KINDS:
        return _OTHER_KINDS[args.kind](args)
    verify = _verify_tpm if args.subcommand == "verify" else _replay
    return run_report(
        lambda: verify(args), _render_report, as_json=args.json, errors=(UsageError, CliError)
    )


def _read(path: Path, what: str) -> bytes:
    return read_input(path, what, MAX_INPUT_BYTES)


def _nonce(text: str) -> bytes:
    nonce = parse_hex("--nonce", text)
    if not nonce:
        # A quote over an empty nonce proves no freshness; the verifier never issues one.
        raise UsageError("--nonce: empty; give the nonce the verifier issued, in hex")
    return nonce


def _verify_tpm(args: argparse.Namespace) -> EvidenceReport:
    # Imported here so that `weightgate --help` does not load tpm2-pytss.
    from verifier.evidence.errors import ParseError  # noqa: PLC0415
    from verifier.evidence.tpm.akfile import load_ak  # noqa: PLC0415
    from verifier.evidence.tpm.appraise import ReferencePcrs  # noqa: PLC0415
    from verifier.evidence.tpm.offline_verify import TpmEvidence, verify_tpm_offline  # noqa: PLC0415

    if args.pcrs is None and any(x is not None for x in (args.eventlog, args.ima, args.reference)):
        raise UsageError(
            "--eventlog, --ima and --reference need --pcrs: the quote signs only the digest "
            "of the PCR values, so the values themselves must be given"
        )
    if args.ima_policy is not None and args.ima is None:
        raise UsageError("--ima-policy needs --ima: the policy appraises the IMA list")
    if args.boot_reference is not None and args.eventlog is None:
        raise UsageError("--boot-reference needs --eventlog: the reference appraises the log")
    nonce = _nonce(args.nonce)
    ak = parse_input(args.ak, "AK", MAX_INPUT_BYTES, load_ak, ParseError)
    reference = None
    if args.reference is not None:
        try:
            reference = ReferencePcrs(parse_pcrs_json(args.reference))
        except ValueError as exc:
            raise UsageError(f"reference {args.reference}: {exc}") from None
    evidence = TpmEvidence(
        ak=ak,
        attest=_read(args.message, "quote message"),
        signature=_read(args.signature, "quote signature"),
        nonce=nonce,
        pcrs=None if args.pcrs is None else parse_pcrs_json(args.pcrs),
        event_log=None if args.eventlog is None else _read(args.eventlog, "event log"),
        reference=reference,
        boot_reference=None if args.boot_reference is None else _boot_ref(args.boot_reference),
        allow_sha1_signatures=args.allow_sha1,
        ima_log=None if args.ima is None else _read(args.ima, "IMA list"),
        ima_policy=None if args.ima_policy is None else _ima_policy(args.ima_policy),
    )
    return verify_tpm_offline(evidence)


def _boot_ref(path: Path) -> BootReference:
    from verifier.evidence.tpm.boot_reference_format import (  # noqa: PLC0415
        BootReferenceError,
        load_boot_reference,
    )

    def parse(data: bytes) -> BootReference:
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise BootReferenceError("not JSON") from None
        if not isinstance(document, dict):
            raise BootReferenceError("expected a JSON object")
        return load_boot_reference(document)

    return parse_input(path, "boot reference", MAX_INPUT_BYTES, parse, BootReferenceError)


def _ima_policy(path: Path) -> RuntimePolicy:
    from verifier.evidence.tpm.ima_policy import (  # noqa: PLC0415
        RuntimePolicyError,
        load_runtime_policy,
    )

    return parse_input(path, "IMA policy", MAX_INPUT_BYTES, load_runtime_policy, RuntimePolicyError)


def _replay(args: argparse.Namespace) -> EvidenceReport:
    from verifier.evidence.tpm.offline_ima import ima_replay_report  # noqa: PLC0415
    from verifier.evidence.tpm.offline_replay import replay_report  # noqa: PLC0415

    expected = None if args.pcrs is None else parse_pcrs_json(args.pcrs)
    if args.ima is not None:
        return ima_replay_report(_read(args.ima, "IMA list"), expected)
    return replay_report(_read(args.eventlog, "event log"), expected)


def _inspect(args: argparse.Namespace) -> int:
    from verifier.evidence.tpm.inspect_file import inspect_bytes  # noqa: PLC0415
    from verifier.evidence_render import render_inspection  # noqa: PLC0415

    try:
        inspection = inspect_bytes(_read(args.file, "file"))
    except UsageError as exc:
        return usage_exit("evidence", exc)
    document = {"file": str(args.file), **inspection.to_json()}
    print(
        json.dumps(document, indent=2) if args.json else render_inspection(str(args.file), document)
    )
    broken = inspection.error is not None or inspection.kind == "unrecognised"
    return EXIT_REJECTED if broken else 0


def _render_report(report: EvidenceReport) -> str:
    from verifier.evidence_render import render_report  # noqa: PLC0415

    return render_report(report)
