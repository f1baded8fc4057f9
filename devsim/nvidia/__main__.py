"""``python -m devsim.nvidia init DIR --gpus N``: make a simulated GPU fleet on disk.

Bad input is one line on stderr and exit status 2, so scripts and people both
see at once what to fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from devsim.nvidia.fleet import MAX_GPUS, MAX_VALIDITY_DAYS, FleetError, create_fleet

PROG = "python -m devsim.nvidia"
USAGE_ERROR = 2

DESCRIPTION = """\
Simulated NVIDIA Hopper GPUs for tests and demos. Their evidence is in the real
formats (SPDM reports, device certificate chains, signed RIMs, OCSP answers) but
chains to freshly generated TEST roots, which the verifier accepts only where
they are pinned explicitly; NVIDIA's roots never vouch for them.
"""

INIT_EPILOG = """\
DIR receives: trust/device_root.pem and trust/rim_root.pem (the TEST roots to
pin), rims/<RIM id>.xml (driver and VBIOS RIMs), ocsp/ (a good OCSP answer per
certificate, in the verifier's offline cache layout), gpu_policy.json (a policy
these GPUs satisfy), gpus/<i>/key.pem (0600) and gpus/<i>/chain.pem, and
fleet.json. CA keys are not kept. DIR must be absent or empty.
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
        help="create a fleet directory",
        description="Create a fleet of simulated GPUs with fresh TEST keys and roots.",
        epilog=INIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("directory", type=Path, metavar="DIR", help="where to write the fleet")
    init.add_argument(
        "--gpus", type=int, required=True, metavar="N", help=f"number of GPUs, 1..{MAX_GPUS}"
    )
    init.add_argument(
        "--validity-days",
        type=int,
        default=30,
        metavar="D",
        help=f"certificates and OCSP answers stay valid D days, 1..{MAX_VALIDITY_DAYS} "
        "(default 30)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        fleet = create_fleet(args.directory, gpus=args.gpus, validity_days=args.validity_days)
    except (FleetError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    driver_id, vbios_id = fleet.rim_ids
    print(
        f"{fleet.directory}: {fleet.gpu_count} simulated {fleet.model.chip} GPUs, "
        f"driver {fleet.model.driver_version}, VBIOS {fleet.model.vbios_version}, "
        f"valid until {fleet.valid_until.isoformat()}; RIMs {driver_id}, {vbios_id}; "
        "TEST roots in trust/ (pin explicitly, never in production)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
