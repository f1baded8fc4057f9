"""`weightgate pki`: an evaluation CA and the certificates of the verifier, operators, agents."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from verifier.identity import Role
from verifier.operator_cli import format_table
from verifier.pki import (
    LEAF_DAYS,
    IssuedFiles,
    PkiError,
    init_ca,
    issue_agent,
    issue_operator,
    load_ca,
)
from verifier.pki import issue_server as issue_server_cert
from verifier.pki_crl import CRL_DAYS, REASONS, CrlWritten, revoke, write_crl
from verifier.pki_records import issued, revoked

ROLE_NAMES = ",".join(r.value for r in Role if r is not Role.AGENT)


def add_pki_commands(commands: Any) -> None:
    pki = commands.add_parser("pki", help="an evaluation CA and its certificates")
    pki_commands = pki.add_subparsers(dest="subcommand", required=True)
    init = pki_commands.add_parser("init", help="create a new CA (ca.crt, ca.key 0600) in DIR")
    issue = pki_commands.add_parser("issue", help="issue a certificate and key from the CA")
    kinds = issue.add_subparsers(dest="kind", required=True)
    operator = kinds.add_parser("operator", help="a person's client certificate, with roles")
    operator.add_argument("name", help="the operator's name (certificate CN, audit actor)")
    operator.add_argument("--role", required=True, help=f"one or more of {ROLE_NAMES}, comma-sep.")
    agent = kinds.add_parser("agent", help="an agent's client certificate, bound to its host")
    agent.add_argument("host", help="the host id the agent attests as")
    server = kinds.add_parser("server", help="the verifier's server certificate")
    server.add_argument("name", help="the certificate's CN (default SAN)")
    server.add_argument(
        "--san", nargs="+", action="extend", default=[], help="DNS names or IP addresses"
    )
    for kind in (operator, agent, server):
        kind.add_argument("--days", type=int, default=LEAF_DAYS, help="validity (%(default)s)")
    revoke_parser = pki_commands.add_parser(
        "revoke", help="revoke a certificate for good and re-sign the CRL (DIR/ca.crl)"
    )
    which = revoke_parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", help="the certificate's serial, hexadecimal (see `pki list`)")
    which.add_argument("--cert", type=Path, help="the certificate file")
    revoke_parser.add_argument("--reason", required=True, choices=list(REASONS))
    revoke_parser.add_argument("--note", default="", help="free text kept in DIR/revoked only")
    crl = pki_commands.add_parser("crl", help="re-sign DIR/ca.crl before its next update")
    for command in (revoke_parser, crl):
        command.add_argument(
            "--crl-days", type=int, default=CRL_DAYS, help="CRL validity (%(default)s days)"
        )
    listing = pki_commands.add_parser("list", help="certificates issued, and which are revoked")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    for command in (init, operator, agent, server, revoke_parser, crl, listing):
        command.add_argument("--dir", type=Path, required=True, help="the PKI directory")


def _roles(text: str) -> list[Role]:
    roles = []
    for part in text.split(","):
        try:
            roles.append(Role(part.strip()))
        except ValueError:
            raise PkiError(f"--role: unknown role {part.strip()!r} (known: {ROLE_NAMES})") from None
    return roles


def run_pki_command(args: argparse.Namespace) -> int:
    """Exit 0 printing what was done, 2 on a usage error."""
    try:
        print(_dispatch(args))
    except (PkiError, OSError) as exc:
        print(f"weightgate: {exc}", file=sys.stderr)
        return 2
    return 0


def _dispatch(args: argparse.Namespace) -> str:
    if args.subcommand == "revoke":
        done = revoke(
            args.dir,
            serial=args.serial,
            certificate=args.cert,
            reason=args.reason,
            note=args.note,
            crl_days=args.crl_days,
        )
        record = done.record
        said = "already revoked" if done.already else "revoked"
        return (
            f"{said} {record.name!r} serial {record.serial} on {record.revoked_at}: "
            f"{record.reason}\n{_crl_line(done.crl)}"
        )
    if args.subcommand == "crl":
        return _crl_line(write_crl(args.dir, days=args.crl_days))
    if args.subcommand == "list":
        return _listing(args.dir, as_json=args.json)
    files: IssuedFiles
    if args.subcommand == "init":
        files = init_ca(args.dir)
    elif args.kind == "operator":
        files = issue_operator(args.dir, args.name, _roles(args.role), days=args.days)
    elif args.kind == "agent":
        files = issue_agent(args.dir, args.host, days=args.days)
    else:
        files = issue_server_cert(args.dir, args.name, args.san, days=args.days)
    return f"certificate {files.certificate}\nprivate key {files.private_key} (mode 0600)"


def _crl_line(crl: CrlWritten) -> str:
    return (
        f"CRL {crl.path} number {crl.number}, {crl.revoked} revoked, next update "
        f"{crl.next_update:%Y-%m-%dT%H:%M:%SZ}: copy it to the verifier's "
        "[verifier.tls] client_crl and re-sign it (`pki crl`) before then"
    )


def _listing(directory: Path, *, as_json: bool) -> str:
    ca_cert, _ = load_ca(directory)
    certificates = issued(directory, ca_cert)
    revocations = revoked(directory)
    documents = []
    for serial in sorted(certificates.keys() | revocations.keys()):
        certificate = certificates.get(serial)
        revocation = revocations.get(serial)
        document: dict[str, Any] = asdict(certificate) if certificate else {"serial": serial}
        document["revoked"] = asdict(revocation) if revocation else None
        documents.append(document)
    documents.sort(key=lambda d: (d.get("kind", "?"), d.get("name") or d["revoked"]["name"]))
    if as_json:
        return json.dumps(documents, indent=2)
    rows = [["NAME", "KIND", "ROLES/HOST", "SERIAL", "NOT AFTER", "REVOKED"]]
    for d in documents:
        gone = d["revoked"]
        rows.append(
            [
                d.get("name") or gone["name"],
                d.get("kind", "?"),
                d.get("host_id") or ",".join(d.get("roles", ())) or "-",
                d["serial"],
                d.get("not_after", "?"),
                f"{gone['revoked_at']} {gone['reason']}" if gone else "no",
            ]
        )
    return format_table(rows) if documents else "no certificates issued"
