"""``weightgate-agent``: the attestation agent's command line.

Exit codes: 0 success, 1 runtime failure (TPM or verifier), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence

import grpc.aio

from agent import logs
from agent.collectors.tpm import BANKS, Tpm, TpmError
from agent.config import ConfigError, load_config
from agent.daemon import Agent, EnrollmentError, run_agent

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
_MAX_PCR = 23


def _pcr_list(text: str) -> list[int]:
    """Parse "0-7,10" into [0, 1, ..., 7, 10]."""
    indices: set[int] = set()
    try:
        for part in text.split(","):
            low, sep, high = part.strip().partition("-")
            first = int(low)
            last = int(high) if sep else first
            if not 0 <= first <= last <= _MAX_PCR:
                raise ValueError(part)
            indices.update(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected PCR indices 0..{_MAX_PCR} like 0-7,10"
        ) from None
    return sorted(indices)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightgate-agent",
        description="Weightgate attestation agent: proves this host's state to the "
        "verifier with TPM quotes.",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="minimum level of the JSON log lines written to stderr (default: info)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", required=True, metavar="FILE", help="agent configuration (TOML)")
        return p

    with_config(
        sub.add_parser(
            "run",
            help="enroll if needed, then attest continuously until SIGTERM/SIGINT",
            description="Enroll the attestation key if this host is not enrolled yet, then "
            "keep the attestation stream to the verifier open, answering its challenges "
            "with TPM quotes. Reconnects with exponential backoff; stops on SIGTERM/SIGINT.",
        )
    )
    with_config(
        sub.add_parser(
            "enroll",
            help="enroll the attestation key with the verifier once and exit",
            description="Create the attestation key if needed, prove it shares a TPM with "
            "the endorsement key (credential activation) and save the enrollment.",
        )
    )
    read = with_config(
        sub.add_parser(
            "read-pcrs",
            help="print PCR values as JSON (to take reference values from a known-good host)",
            description='Print {"pcrs": {BANK: {INDEX: HEX}}} read from this host\'s TPM.',
        )
    )
    read.add_argument("--bank", default="sha256", help="PCR bank (default: sha256)")
    read.add_argument(
        "--pcrs",
        type=_pcr_list,
        default=list(range(8)),
        metavar="LIST",
        help="PCR indices, ranges allowed, e.g. 0-7,10 (default: 0-7)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The TSS writes its own unstructured logs to stderr; our errors carry the decoded
    # TPM response code, so keep stderr JSON-only unless the operator asks otherwise.
    os.environ.setdefault("TSS2_LOG", "all+none")

    logs.configure(level=getattr(logging, args.log_level.upper()))
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"weightgate-agent: {e}", file=sys.stderr)
        return EXIT_CONFIG

    if args.command == "run":
        return run_agent(config)

    if args.command == "read-pcrs":
        if args.bank not in BANKS:
            print(
                f"weightgate-agent: unknown bank {args.bank!r} (known: {', '.join(BANKS)})",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        try:
            values = Tpm(config.tcti).read_pcrs({args.bank: args.pcrs})
        except TpmError as e:
            print(f"weightgate-agent: {e}", file=sys.stderr)
            return EXIT_FAILURE
        out = {
            "pcrs": {
                bank: {str(i): v.hex() for i, v in bank_values.items()}
                for bank, bank_values in values.items()
            }
        }
        print(json.dumps(out, indent=2))
        return EXIT_OK

    # enroll
    try:
        state = asyncio.run(Agent(config).enroll_once())
    except grpc.aio.AioRpcError as e:
        print(
            f"weightgate-agent: enrollment failed: {e.code().name}: {e.details()}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except (TpmError, EnrollmentError) as e:
        print(f"weightgate-agent: enrollment failed: {e}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps({"host_id": state.host_id, "ak_name": state.ak_name.hex()}))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
