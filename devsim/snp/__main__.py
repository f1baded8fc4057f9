"""``python -m devsim.snp init DIR``: make a simulated SEV-SNP guest on disk.

Bad input is one line on stderr and exit status 2, so scripts and people both
see at once what to fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devsim.cli import add_validity_days, init_parser, run_init
from devsim.snp.files import SnpHostError
from devsim.snp.host import MAX_VALIDITY_DAYS, PRODUCT_NAMES, SnpHost, create_snp_host

PROG = "python -m devsim.snp"

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


def _parser() -> argparse.ArgumentParser:
    parser, init = init_parser(
        PROG,
        DESCRIPTION,
        init_help="create a simulated SNP guest directory",
        init_description="Create a simulated SEV-SNP guest with a fresh chip, VCEK and TEST ARK.",
        init_epilog=INIT_EPILOG,
        directory_help="where to write the host",
    )
    init.add_argument(
        "--product",
        choices=PRODUCT_NAMES,
        default="Genoa",
        help="AMD product line of the simulated CPU (default Genoa)",
    )
    add_validity_days(init, what="certificates", max_days=MAX_VALIDITY_DAYS)
    return parser


def _summary(host: SnpHost) -> str:
    return (
        f"{host.directory}: simulated SEV-SNP {host.product} guest, "
        f"TCB 0x{host.tcb:016x}, measurement {host.measurement.hex()}, "
        f"valid until {host.valid_until.isoformat()}; TEST ARK in trust/ark.pem "
        f"(SHA-256 {host.ark_sha256.hex()}; pin explicitly, never in production)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_init(
        PROG,
        lambda: create_snp_host(
            args.directory, product=args.product, validity_days=args.validity_days
        ),
        SnpHostError,
        _summary,
    )


if __name__ == "__main__":
    sys.exit(main())
