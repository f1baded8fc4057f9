"""`weightgate reference propose --from-eventlog`, `reference propose-ima`, `reference show-boot`.

A measured-boot reference is proposed from a known-good host's event log: the
log is replayed (and, with --pcrs, checked against the PCRs its TPM reported),
its events are checked, and the facts read from verified PCRs become the
reference approvers are asked to approve (see `weightgate proposals`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.boot_commands import unmeasured_linux_lines
from verifier.evidence.tpm.boot_facts import extract_boot_facts
from verifier.evidence.tpm.boot_reference import reference_from_facts
from verifier.evidence.tpm.event_checks import check_events
from verifier.evidence.tpm.eventlog import parse_event_log
from verifier.evidence.tpm.ima_policy import RuntimePolicyError, load_runtime_policy
from verifier.evidence.tpm.replay import ReplayError, replay
from verifier.operator_cli import (
    RPC_TIMEOUT_SECONDS,
    CliError,
    add_connection_arguments,
    parse_pcrs_json,
)
from verifier.proposal_cli import add_justification_argument, propose
from weightgate.v1 import operator_pb2, operator_pb2_grpc

_OURS = ("propose", "propose-ima", "show-boot")


def add_boot_reference_commands(reference_commands: Any) -> None:
    proposal = reference_commands.add_parser(
        "propose",
        help="propose a group's measured-boot reference from a known-good host's event log",
        description="Replays LOG, checks its events, reads facts (Secure Boot, PK/KEK/db/dbx, "
        "boot applications, kernel command line, every PCR9 file digest, PCR2 driver digests, "
        "firmware version) "
        "from the PCRs that --pcrs "
        "confirms, and proposes them as the group's reference; it applies once approved.",
    )
    proposal.add_argument("--group", required=True)
    proposal.add_argument(
        "--from-eventlog", type=Path, required=True, dest="eventlog",
        help="binary_bios_measurements copied from the known-good host",
    )  # fmt: skip
    proposal.add_argument(
        "--pcrs", type=Path,
        help='PCRS.json read from that host\'s TPM ({"pcrs": {"sha256": {"0": "<hex>"}}}); '
        "without it nothing ties the log to a TPM and the output says so",
    )  # fmt: skip
    proposal.add_argument("--dry-run", action="store_true", help="print the reference only")
    add_justification_argument(proposal)
    add_connection_arguments(proposal)
    ima = reference_commands.add_parser(
        "propose-ima",
        help="propose a group's IMA runtime policy (allowed file digests, excludes, keys)",
        description="The policy format is documented in verifier/evidence/tpm/ima_policy.py "
        "(close to Keylime's runtime policy). Once approved, every host of the group sends its "
        "IMA list each round, incrementally, and every new entry is appraised against it.",
    )
    ima.add_argument("--group", required=True)
    ima.add_argument("--policy", type=Path, required=True, help="the policy JSON file")
    add_justification_argument(ima)
    add_connection_arguments(ima)
    show = reference_commands.add_parser("show-boot", help="print a group's boot reference")
    show.add_argument("--group", required=True)
    add_connection_arguments(show)


def reference_document(eventlog: Path, pcrs: Path | None) -> tuple[dict[str, Any], list[str]]:
    """The reference a host with this log (and these PCRs) satisfies, and warnings."""
    try:
        log = parse_event_log(eventlog.read_bytes())
    except OSError as exc:
        raise CliError(f"{eventlog}: cannot read: {exc.strerror}") from None
    except ParseError as exc:
        raise CliError(f"{eventlog}: {exc}") from None
    bank = "sha256" if "sha256" in log.banks else log.banks[0]
    try:
        replayed = replay(log, bank=bank)
    except ReplayError as exc:
        raise CliError(f"{eventlog}: does not replay in {bank}: {exc}") from None
    warnings: list[str] = []
    if pcrs is not None:
        given = parse_pcrs_json(pcrs).get(bank, {})
        wrong = [p for p in sorted(replayed) if p in given and given[p] != replayed[p]]
        if wrong:
            raise CliError(f"{eventlog} does not replay to {pcrs} in {bank}: PCRs {wrong}")
        verified = sorted(p for p in replayed if p in given)
    else:
        verified = sorted(replayed)
        warnings.append("no --pcrs: the log was not checked against a TPM's PCR values")
    findings = check_events(log, bank)
    facts = extract_boot_facts(log, bank, verified_pcrs=verified)
    try:
        document = reference_from_facts(facts, checks=findings)
    except ValueError as exc:
        raise CliError(f"{eventlog}: not a known-good boot: {exc}") from None
    # Said aloud: each widens what the reference allows beyond what was measured.
    warnings += [
        f"linux command line allowed although no measured kernel_cmdline spells it: {line!r}"
        for line in unmeasured_linux_lines(facts.grub_commands, facts.kernel_cmdlines)
    ]
    # So does a reference that never reads PCR2: it allows any driver.
    if "driver_digests" not in document:
        warnings.append(
            f"PCR2 was not verified (no {bank} PCR2 value to replay it to): the proposal "
            "lists no driver_digests, so the reference will not appraise UEFI drivers"
        )
    return document, warnings


def run_boot_reference_command(
    stub: operator_pb2_grpc.OperatorStub, args: argparse.Namespace
) -> str | None:
    if args.command != "reference" or args.subcommand not in (
        "propose",
        "propose-ima",
        "show-boot",
    ):
        return None
    if args.subcommand == "propose-ima":
        try:
            policy = args.policy.read_bytes()
        except OSError as exc:
            raise CliError(f"{args.policy}: cannot read: {exc.strerror}") from None
        try:
            load_runtime_policy(policy)  # say what is wrong before anyone is asked to approve
        except RuntimePolicyError as exc:
            raise CliError(f"{args.policy}: {exc}") from None
        ima = operator_pb2.ImaPolicyChange(group=args.group, policy_json=policy)
        return propose(stub, operator_pb2.ProposedChange(ima_policy=ima), args.justification)
    if args.subcommand == "show-boot":
        reference = stub.GetBootReference(
            operator_pb2.GetReferenceValuesRequest(group=args.group), timeout=RPC_TIMEOUT_SECONDS
        )
        return json.dumps(json.loads(reference.reference_json), indent=2, sort_keys=True)
    document, warnings = reference_document(args.eventlog, args.pcrs)
    notes = [f"warning: {w}" for w in warnings]
    # --dry-run never gets here: verifier.cli prints the reference without a channel.
    change = operator_pb2.BootReferenceChange(
        group=args.group, reference_json=json.dumps(document, sort_keys=True).encode()
    )
    proposed = propose(stub, operator_pb2.ProposedChange(boot_reference=change), args.justification)
    return "\n".join([*notes, proposed])
