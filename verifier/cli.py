"""The `weightgate` command: run the verifier, operate it, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from verifier.audit_cli import add_audit_commands, run_audit_command
from verifier.boot_reference_cli import add_boot_reference_commands
from verifier.config import ConfigError, load_config
from verifier.evidence_cli import add_evidence_commands, run_evidence_command
from verifier.gate_cli import add_gate_commands
from verifier.host_cli import HOST_COMMANDS, add_host_commands, run_host_command
from verifier.keystore import KeyStoreError
from verifier.nvgpu_cli import add_import_rim_command, run_import_rim_command
from verifier.operator_cli import add_connection_arguments, run_operator_command
from verifier.pki_cli import add_pki_commands, run_pki_command
from verifier.policy_cli import add_policy_commands
from verifier.proposal_cli import add_justification_argument, add_proposal_commands
from verifier.snp_measure_cli import add_snp_measure_command, run_snp_measure_command
from verifier.trust_cli import add_trust_commands

DESCRIPTION = """\
weightgate decides which hosts may receive model weights, from hardware evidence.

  weightgate verifier serve --config verifier.toml   run the verifier service
  weightgate hosts list                              trust status of every host
  weightgate hosts show HOST                         one host: reasons, site, releases, history
  weightgate hosts watch [HOST ...] [--json]         trust changes live, one line each
  weightgate hosts add HOST --group GROUP            register a host before it enrolls
  weightgate reference set --group G --pcrs F.json   set a group's reference PCR values
  weightgate models add NAME --version V --path DIR --risk-tier T --config verifier.toml
                                                     encrypt and register a checkpoint
  weightgate sites set SITE --cleared T1,T2          a site and the risk tiers it may hold
  weightgate hosts assign HOST --site SITE           put a host in a site
  weightgate reviews record DIGEST --site S --reviewer R   approve a model version for a site
  weightgate releases list [--host H]                released / renewed / revoked / erased
  weightgate hosts quarantine HOST --reason TEXT     withdraw trust now; forces erasure
  weightgate audit list [--limit N] [--json]         the newest operator audit records
  weightgate audit search --actor A --target host_id=H   audit records by who, what, when
  weightgate audit tail --follow                     new audit records as they come
  weightgate audit checkpoint --out FILE             a signed audit checkpoint, to keep
  weightgate audit verify --checkpoint FILE --public-key PEM
                                                     check the audit chain and checkpoints
  weightgate pki init --dir DIR                      an evaluation CA for mutual TLS
  weightgate pki issue operator NAME --role R[,R] --dir DIR   a person's certificate
  weightgate pki issue agent HOST --dir DIR          an agent's certificate, bound to HOST
  weightgate pki issue server NAME --dir DIR [--san DNS/IP ...]   the verifier's certificate
  weightgate pki revoke --dir DIR --cert FILE --reason R   revoke for good, re-sign DIR/ca.crl
  weightgate pki list --dir DIR                      certificates issued, and which are revoked
  weightgate evidence verify tpm --ak AK --message Q.attest --signature Q.sig --nonce HEX
      [--pcrs PCRS.json] [--eventlog LOG] [--reference REF]   check a quote offline
  weightgate evidence replay --eventlog LOG [--pcrs PCRS.json]   replay a boot log per bank
  weightgate evidence inspect FILE                   what an evidence file is, decoded
  weightgate evidence verify nvgpu --evidence EVIDENCE.json --nonce HEX --rim-store DIR ...
                                                     check NVIDIA GPUs / NVSwitches offline
  weightgate reference import-rim FILE... --store DIR --rim-root PEM   verify and store RIMs
  weightgate reference propose-gpu --group G --policy FILE   propose a group's NVIDIA GPU policy
  weightgate reference show-gpu --group G [--json]   a group's GPU policy (show-ima: IMA policy)
  weightgate reference propose-snp --group G --policy FILE   propose a group's AMD SEV-SNP policy
  weightgate reference show-snp --group G [--json]   a group's SEV-SNP policy
  weightgate reference snp-measure --ovmf OVMF.fd --vcpus N --vcpu-type T [--kernel K ...]
                                                     expected SEV-SNP launch measurement, offline
  weightgate reference propose-tdx --group G --policy FILE   propose a group's Intel TDX policy
  weightgate reference show-tdx --group G [--json]   a group's TDX policy
  weightgate demo                                    swtpm + verifier + agent, end to end
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightgate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    verifier = commands.add_parser("verifier", help="run the verifier service")
    verifier_commands = verifier.add_subparsers(dest="subcommand", required=True)
    serve = verifier_commands.add_parser("serve", help="serve the gRPC API until SIGTERM")
    serve.add_argument("--config", type=Path, required=True, help="verifier TOML config file")
    serve.add_argument("--database", help="SQLAlchemy URL overriding the config's database")
    public_key = verifier_commands.add_parser(
        "public-key",
        help="print the signing public key (PEM) that agents pin for manifests "
        "and auditors for audit checkpoints",
    )
    public_key.add_argument("--config", type=Path, required=True, help="verifier TOML config")

    hosts = commands.add_parser("hosts", help="see and register hosts")
    hosts_commands = hosts.add_subparsers(dest="subcommand", required=True)
    hosts_list = hosts_commands.add_parser("list", help="a table: host, status, last attestation")
    hosts_list.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(hosts_list)
    add_host_commands(hosts_commands)  # show, watch
    hosts_add = hosts_commands.add_parser("add", help="register a host so it may enroll")
    hosts_add.add_argument("host")
    hosts_add.add_argument("--group", required=True, help="host group (selects reference values)")
    add_connection_arguments(hosts_add)

    reference = commands.add_parser("reference", help="reference (golden) PCR values")
    reference_commands = reference.add_subparsers(dest="subcommand", required=True)
    reference_set = reference_commands.add_parser(
        "set",
        help="propose replacing a group's reference PCR values from a PCRS.json file "
        "(takes effect once approved)",
    )
    reference_set.add_argument("--group", required=True)
    reference_set.add_argument(
        "--pcrs",
        type=Path,
        required=True,
        help='JSON {"pcrs": {"sha256": {"0": "<hex>", ...}}}, as weightgate-agent read-pcrs writes',
    )
    reference_set.add_argument("--only", help="take only these PCRs, e.g. 0-7 (default: all)")
    add_justification_argument(reference_set)
    add_connection_arguments(reference_set)
    reference_show = reference_commands.add_parser("show", help="print a group's reference")
    reference_show.add_argument("--group", required=True)
    reference_show.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(reference_show)
    add_boot_reference_commands(reference_commands)
    add_policy_commands(reference_commands)
    add_import_rim_command(reference_commands)
    add_snp_measure_command(reference_commands)

    add_gate_commands(commands, hosts_commands)
    add_proposal_commands(commands)
    add_trust_commands(commands)
    add_audit_commands(commands)
    add_evidence_commands(commands)
    add_pki_commands(commands)

    demo = commands.add_parser("demo", help="run the end-to-end demo on a private swtpm")
    demo.add_argument("--keep", action="store_true", help="keep the demo's state directory")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from verifier.server.app import serve  # noqa: PLC0415 - keep `--help` fast

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"weightgate: {exc}", file=sys.stderr)
        return 2
    if args.database:
        config = replace(config, database_url=args.database)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(serve(config))
    except (KeyStoreError, OSError) as exc:
        print(f"weightgate: cannot start the verifier: {exc}", file=sys.stderr)
        return 2
    return 0


def _public_key(args: argparse.Namespace) -> int:
    from verifier.server.app import open_keystore  # noqa: PLC0415

    try:
        keystore = open_keystore(load_config(args.config))
    except (ConfigError, KeyStoreError, OSError) as exc:
        print(f"weightgate: {exc}", file=sys.stderr)
        return 2
    pem = keystore.signing_public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    print(pem.decode(), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # Whoever read the output (head, a pager) has gone: nothing is left to tell it,
        # and Python would print a traceback when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _reference_dry_run(args: argparse.Namespace) -> int:
    """``reference propose --dry-run``: the proposed reference, no verifier contacted."""
    from verifier.boot_reference_cli import reference_document  # noqa: PLC0415
    from verifier.operator_cli import CliError  # noqa: PLC0415

    try:
        document, warnings = reference_document(args.eventlog, args.pcrs)
    except CliError as exc:
        print(f"weightgate: {exc}", file=sys.stderr)
        return 2
    # Warnings apart from the document, so that `--dry-run > ref.json` is the reference.
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(document, indent=2, sort_keys=True))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "verifier":
        return _public_key(args) if args.subcommand == "public-key" else _serve(args)
    if args.command == "demo":
        from verifier.demo.runner import run_demo  # noqa: PLC0415

        return run_demo(keep=args.keep)
    if args.command == "audit":
        return run_audit_command(args)
    if args.command == "evidence":
        return run_evidence_command(args)
    if args.command == "pki":
        return run_pki_command(args)
    if args.command == "reference" and args.subcommand == "propose" and args.dry_run:
        return _reference_dry_run(args)
    if args.command == "reference" and args.subcommand == "import-rim":
        return run_import_rim_command(args)
    if args.command == "reference" and args.subcommand == "snp-measure":
        return run_snp_measure_command(args)
    if args.command == "hosts" and args.subcommand in HOST_COMMANDS:
        return run_host_command(args)
    return run_operator_command(args)


if __name__ == "__main__":
    sys.exit(main())
