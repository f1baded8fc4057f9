"""``python -m devsim.nvidia init DIR --gpus N``: make a simulated GPU fleet on disk.

Bad input is one line on stderr and exit status 2, so scripts and people both
see at once what to fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devsim.cli import add_validity_days, init_parser, run_init
from devsim.nvidia.fleet import MAX_GPUS, MAX_VALIDITY_DAYS, Fleet, FleetError, create_fleet

PROG = "python -m devsim.nvidia"

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


def _parser() -> argparse.ArgumentParser:
    parser, init = init_parser(
        PROG,
        DESCRIPTION,
        init_help="create a fleet directory",
        init_description="Create a fleet of simulated GPUs with fresh TEST keys and roots.",
        init_epilog=INIT_EPILOG,
        directory_help="where to write the fleet",
    )
    init.add_argument(
        "--gpus", type=int, required=True, metavar="N", help=f"number of GPUs, 1..{MAX_GPUS}"
    )
    add_validity_days(init, what="certificates and OCSP answers", max_days=MAX_VALIDITY_DAYS)
    return parser


def _summary(fleet: Fleet) -> str:
    driver_id, vbios_id = fleet.rim_ids
    return (
        f"{fleet.directory}: {fleet.gpu_count} simulated {fleet.model.chip} GPUs, "
        f"driver {fleet.model.driver_version}, VBIOS {fleet.model.vbios_version}, "
        f"valid until {fleet.valid_until.isoformat()}; RIMs {driver_id}, {vbios_id}; "
        "TEST roots in trust/ (pin explicitly, never in production)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_init(
        PROG,
        lambda: create_fleet(args.directory, gpus=args.gpus, validity_days=args.validity_days),
        FleetError,
        _summary,
    )


if __name__ == "__main__":
    sys.exit(main())
