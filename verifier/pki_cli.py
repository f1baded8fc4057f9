"""`weightgate pki`: an evaluation CA and the certificates of the verifier, operators, agents."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from verifier.identity import Role
from verifier.pki import LEAF_DAYS, IssuedFiles, PkiError, init_ca, issue_agent, issue_operator
from verifier.pki import issue_server as issue_server_cert

ROLE_NAMES = ",".join(r.value for r in Role if r is not Role.AGENT)


def add_pki_commands(commands: Any) -> None:
    pki = commands.add_parser("pki", help="an evaluation CA and its certificates")
    pki_commands = pki.add_subparsers(dest="subcommand", required=True)
    init = pki_commands.add_parser("init", help="create a new CA (ca.crt, ca.key 0600) in DIR")
    init.add_argument("--dir", type=Path, required=True, help="the PKI directory")
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
        kind.add_argument("--dir", type=Path, required=True, help="the PKI directory")
        kind.add_argument("--days", type=int, default=LEAF_DAYS, help="validity (%(default)s)")


def _roles(text: str) -> list[Role]:
    roles = []
    for part in text.split(","):
        try:
            roles.append(Role(part.strip()))
        except ValueError:
            raise PkiError(f"--role: unknown role {part.strip()!r} (known: {ROLE_NAMES})") from None
    return roles


def run_pki_command(args: argparse.Namespace) -> int:
    """Exit 0 printing the files written, 2 on a usage error."""
    try:
        files: IssuedFiles
        if args.subcommand == "init":
            files = init_ca(args.dir)
        elif args.kind == "operator":
            files = issue_operator(args.dir, args.name, _roles(args.role), days=args.days)
        elif args.kind == "agent":
            files = issue_agent(args.dir, args.host, days=args.days)
        else:
            files = issue_server_cert(args.dir, args.name, args.san, days=args.days)
    except (PkiError, OSError) as exc:
        print(f"weightgate: {exc}", file=sys.stderr)
        return 2
    print(f"certificate {files.certificate}\nprivate key {files.private_key} (mode 0600)")
    return 0
