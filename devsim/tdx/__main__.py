"""``python -m devsim.tdx init DIR``: make a simulated Intel TDX guest on disk.

Bad input is one line on stderr and exit status 2, so scripts and people both
see at once what to fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devsim.cli import add_validity_days, init_parser, run_init
from devsim.tdx.files import TdxGuestError
from devsim.tdx.guest import MAX_VALIDITY_DAYS, TdxGuest, create_tdx_guest

PROG = "python -m devsim.tdx"

DESCRIPTION = """\
A simulated Intel TDX guest for tests and demos. Its quotes and collateral are
in the real formats (v4 quote with QE report certification data and a PEM PCK
chain; TCB Info v3, QE Identity v2, CRLs) but chain to a freshly generated TEST
Intel SGX root, which the verifier accepts only where its SPKI SHA-256 is pinned
explicitly; Intel's root never vouches for it.
"""

INIT_EPILOG = """\
DIR receives: trust/root.pem (the TEST root to pin), pck_chain.pem (PCK, PCK
Platform CA, root), pck_key.pem and attestation_key.pem (0600), collateral/
(tcb_info.json, qe_identity.json, tcb_signing_chain.pem, root_ca_crl.der,
pck_crl.der: the layout of `weightgate evidence verify tdx --collateral`),
tdx_policy.json (a policy the simulated quotes satisfy) and guest.json. The root,
Platform CA and TCB Signing keys are not kept. DIR must be absent or empty.
"""


def _parser() -> argparse.ArgumentParser:
    parser, init = init_parser(
        PROG,
        DESCRIPTION,
        init_help="create a simulated TDX guest directory",
        init_description="Create a simulated TDX guest with fresh keys, PCK chain and TEST root.",
        init_epilog=INIT_EPILOG,
        directory_help="where to write the guest",
    )
    add_validity_days(init, what="certificates and collateral", max_days=MAX_VALIDITY_DAYS)
    return parser


def _summary(guest: TdxGuest) -> str:
    return (
        f"{guest.directory}: simulated TDX guest, FMSPC {guest.platform.fmspc.hex()}, "
        f"MRTD {guest.mr_td.hex()}, valid until {guest.valid_until.isoformat()}; "
        f"TEST root in trust/root.pem (SPKI SHA-256 {guest.root_spki_sha256.hex()}; "
        "pin explicitly, never in production)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_init(
        PROG,
        lambda: create_tdx_guest(args.directory, validity_days=args.validity_days),
        TdxGuestError,
        _summary,
    )


if __name__ == "__main__":
    sys.exit(main())
