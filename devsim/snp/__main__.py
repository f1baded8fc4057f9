"""``python -m devsim.snp init DIR``: make a simulated SEV-SNP guest on disk.

Bad input is one line on stderr and exit status 2, so scripts and people both
see at once what to fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from devsim.snp.files import SnpHostError
from devsim.snp.host import MAX_VALIDITY_DAYS, PRODUCT_NAMES, create_snp_host

PROG = "python -m devsim.snp"
USAGE_ERROR = 2

DESCRIPTION = """\
A simulated AMD SEV-SNP confidential VM for tests and demos. Its reports and
certificates are in the real formats (v3 ATTESTATION_REPORT, VCEK with AMD's
extensions, ASK and ARK) but chain to a freshly generated TEST ARK, which the
verifier accepts only where its SHA-256 is pinned explicitly; AMD's roots never
vouch for it.
"""

INIT_EPILOG = """\
DIR receives: trust/ark.pem (the TEST ARK to pin), cert_chain.pem (ASK then ARK),
vcek.der, vcek_key.pem (0600), snp_policy.json (a policy the simulated reports
satisfy) and host.json. ARK and ASK keys are not kept. DIR must be absent or empty.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage first; one line is easier to act on.
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    init = commands.add_parser(
        "init",
        help="create a simulated SNP guest directory",
        description="Create a simulated SEV-SNP guest with a fresh chip, VCEK and TEST ARK.",
        epilog=INIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("directory", type=Path, metavar="DIR", help="where to write the host")
    init.add_argument(
        "--product",
        choices=PRODUCT_NAMES,
        default="Genoa",
        help="AMD product line of the simulated CPU (default Genoa)",
    )
    init.add_argument(
        "--validity-days",
        type=int,
        default=30,
        metavar="D",
        help=f"certificates stay valid D days, 1..{MAX_VALIDITY_DAYS} (default 30)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        host = create_snp_host(
            args.directory, product=args.product, validity_days=args.validity_days
        )
    except (SnpHostError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    print(
        f"{host.directory}: simulated SEV-SNP {host.product} guest, "
        f"TCB 0x{host.tcb:016x}, measurement {host.measurement.hex()}, "
        f"valid until {host.valid_until.isoformat()}; TEST ARK in trust/ark.pem "
        f"(SHA-256 {host.ark_sha256.hex()}; pin explicitly, never in production)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
