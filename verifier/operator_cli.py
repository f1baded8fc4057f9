"""`weightgate hosts …` and `weightgate reference …`: operator commands.

They talk to the verifier's Operator API (never to its database), print a
table for people or JSON for scripts, and exit non-zero with one clear line on
error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc

from verifier.evidence.json_members import unique_members
from weightgate.v1 import common_pb2, operator_pb2, operator_pb2_grpc

RPC_TIMEOUT_SECONDS = 15.0
HOST_STATUS_NAMES = {
    operator_pb2.HOST_STATUS_REGISTERED: "registered",
    operator_pb2.HOST_STATUS_ENROLLED: "enrolled",
    operator_pb2.HOST_STATUS_TRUSTED: "trusted",
    operator_pb2.HOST_STATUS_UNTRUSTED: "untrusted",
    operator_pb2.HOST_STATUS_QUARANTINED: "quarantined",
}
# Digest size of each PCR bank the verifier accepts (as verifier.attestation.DIGEST_SIZES,
# not imported: it would pull the evidence code into every CLI start).
_DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
TIER_NAMES = {
    common_pb2.TIER_NONE: "none",
    common_pb2.TIER_AFFIRMING: "affirming",
    common_pb2.TIER_WARNING: "warning",
    common_pb2.TIER_CONTRAINDICATED: "contraindicated",
}


class CliError(Exception):
    pass


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection to the verifier")
    group.add_argument(
        "--verifier",
        default=os.environ.get("WEIGHTGATE_VERIFIER", "127.0.0.1:50051"),
        help="verifier address host:port (env WEIGHTGATE_VERIFIER; default %(default)s)",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        default=os.environ.get("WEIGHTGATE_INSECURE") == "1",
        help="plaintext gRPC, for the demo and tests only (env WEIGHTGATE_INSECURE=1)",
    )
    for flag, variable, text in (
        ("--ca", "WEIGHTGATE_CA", "CA certificate that issued the verifier's certificate"),
        ("--cert", "WEIGHTGATE_CERT", "your operator certificate (PEM)"),
        ("--key", "WEIGHTGATE_KEY", "your operator private key (PEM)"),
    ):
        default = os.environ.get(variable)
        group.add_argument(
            flag,
            type=Path,
            default=Path(default) if default else None,
            help=f"{text} (env {variable})",
        )


def operator_channel(args: argparse.Namespace) -> grpc.Channel:
    if args.insecure:
        return grpc.insecure_channel(args.verifier)
    if not (args.ca and args.cert and args.key):
        raise CliError("mutual TLS needs --ca, --cert and --key (or --insecure for the demo)")
    try:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=args.ca.read_bytes(),
            private_key=args.key.read_bytes(),
            certificate_chain=args.cert.read_bytes(),
        )
    except OSError as exc:
        raise CliError(f"{exc.filename}: cannot read: {exc.strerror}") from None
    return grpc.secure_channel(args.verifier, credentials)


def format_time(stamp: Any, *, present: bool) -> str | None:
    if not present:
        return None
    moment: datetime = stamp.ToDatetime()
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def field_time(message: Any, field: str) -> str | None:
    """A Timestamp field of ``message`` as format_time prints it; None when unset."""
    return format_time(getattr(message, field), present=message.HasField(field))


def reasons_document(reasons: Any) -> list[dict[str, str]]:
    return [{"code": r.code, "detail": r.detail} for r in reasons]


def summary_document(host: operator_pb2.HostSummary) -> dict[str, Any]:
    return {
        "host": host.host_id,
        "group": host.group,
        "status": HOST_STATUS_NAMES.get(host.status, "unknown"),
        "last_attestation": format_time(
            host.last_attestation, present=host.HasField("last_attestation")
        ),
        "reasons": reasons_document(host.reasons),
    }


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def first_reason(reasons: list[dict[str, str]]) -> str:
    if not reasons:
        return "-"
    first = reasons[0]
    more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return f"{first['code']}: {first['detail']}{more}" if first["detail"] else first["code"]


def hosts_list(stub: operator_pb2_grpc.OperatorStub, *, as_json: bool) -> str:
    response = stub.ListHosts(operator_pb2.ListHostsRequest(), timeout=RPC_TIMEOUT_SECONDS)
    hosts = [summary_document(h) for h in response.hosts]
    if as_json:
        return json.dumps({"hosts": hosts}, indent=2)
    if not hosts:
        return "no hosts registered (add one with: weightgate hosts add HOST --group GROUP)"
    rows = [["HOST", "GROUP", "STATUS", "LAST ATTESTATION", "REASON"]]
    rows += [
        [h["host"], h["group"], h["status"], h["last_attestation"] or "never",
         first_reason(h["reasons"])]
        for h in hosts
    ]  # fmt: skip
    return format_table(rows)


def hosts_add(stub: operator_pb2_grpc.OperatorStub, host_id: str, group: str) -> str:
    summary = stub.RegisterHost(
        operator_pb2.RegisterHostRequest(host_id=host_id, group=group),
        timeout=RPC_TIMEOUT_SECONDS,
    )
    return f"registered {summary.host_id} in group {summary.group}"


def parse_pcrs_json(path: Path) -> dict[str, dict[int, bytes]]:
    """Read `{"pcrs": {"sha256": {"0": "hex", …}}}` (the test-vector and read-pcrs format)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_members)
    except (OSError, ValueError) as exc:
        raise CliError(f"{path}: cannot read PCR values: {exc}") from None
    except RecursionError:
        raise CliError(f"{path}: cannot read PCR values: JSON nested too deeply") from None
    banks = document.get("pcrs") if isinstance(document, dict) else None
    if not isinstance(banks, dict) or not banks:
        raise CliError(f'{path}: expected {{"pcrs": {{"sha256": {{"0": "<hex>", ...}}}}}}')
    pcrs: dict[str, dict[int, bytes]] = {}
    for bank, values in banks.items():
        size = _DIGEST_SIZES.get(bank)
        if size is None:
            raise CliError(f"{path}: pcrs.{bank}: unknown bank (known: {', '.join(_DIGEST_SIZES)})")
        if not isinstance(values, dict):
            raise CliError(f"{path}: pcrs.{bank}: expected an object of index -> hex")
        # Indices in decimal as written by read-pcrs ("7", not "07", "+7" or "0_7",
        # which int() also reads): two spellings of one PCR must not both pass.
        for index in values:
            if not (index.isdecimal() and index.isascii() and str(int(index)) == index):
                raise CliError(f"{path}: pcrs.{bank}: PCR index {index!r} is not 0-23 in decimal")
        try:
            pcrs[bank] = {int(index): bytes.fromhex(value) for index, value in values.items()}
        except (ValueError, TypeError) as exc:
            raise CliError(f"{path}: pcrs.{bank}: {exc}") from None
        # Checked here, not only by the verifier: a malformed file is a usage error (exit 2),
        # and a negative index would not even fit the request message.
        for index, value in pcrs[bank].items():
            if not 0 <= index <= 23 or len(value) != size:
                raise CliError(
                    f"{path}: pcrs.{bank}.{index}: expected an index 0-23 and a {size}-byte value"
                )
    return pcrs


def _pcr_document(banks: Any) -> dict[str, dict[str, str]]:
    return {b.hash_algorithm: {str(i): v.hex() for i, v in sorted(b.values.items())} for b in banks}


def reference_set(
    stub: operator_pb2_grpc.OperatorStub,
    group: str,
    pcrs: Mapping[str, Mapping[int, bytes]],
    only: Mapping[str, set[int]] | None = None,
    *,
    justification: str = "",
) -> str:
    """Propose replacing the group's reference values (takes effect once approved)."""
    selected = {
        bank: {i: v for i, v in values.items() if only is None or i in only.get(bank, set())}
        for bank, values in pcrs.items()
    }
    request = operator_pb2.SetReferenceValuesRequest(
        group=group,
        pcrs=[common_pb2.PcrBank(hash_algorithm=b, values=v) for b, v in selected.items() if v],
    )
    from verifier.proposal_cli import propose  # noqa: PLC0415 - proposal_cli imports this module

    return propose(stub, operator_pb2.ProposedChange(reference_values=request), justification)


def reference_show(stub: operator_pb2_grpc.OperatorStub, group: str, *, as_json: bool) -> str:
    reference = stub.GetReferenceValues(
        operator_pb2.GetReferenceValuesRequest(group=group), timeout=RPC_TIMEOUT_SECONDS
    )
    pcrs = _pcr_document(reference.pcrs)
    if as_json:
        return json.dumps({"group": reference.group, "pcrs": pcrs}, indent=2)
    lines = [f"group {reference.group}:"]
    for bank, values in pcrs.items():
        lines += [f"  {bank} PCR{index:>2}: {value}" for index, value in values.items()]
    return "\n".join(lines)


def parse_pcr_list(text: str) -> set[int]:
    """'0-7,10' -> {0..7, 10}."""
    indices: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise CliError(f"--only: {part!r} is not a PCR index or range like 0-7") from None
        if not 0 <= first <= last <= 23:
            raise CliError(f"--only: {part!r} is outside 0-23")
        indices.update(range(first, last + 1))
    return indices


def run_operator_command(args: argparse.Namespace) -> int:
    """Dispatch a parsed `hosts`/`reference`/... command; print the result or the error."""
    return call_verifier(args, lambda stub: _dispatch(stub, args))


def call_verifier(
    args: argparse.Namespace, action: Callable[[operator_pb2_grpc.OperatorStub], str | int]
) -> int:
    """Run ``action`` against the Operator API: print its text and exit 0 (or exit
    with its number); usage errors exit 2, refusals 1, with the reason."""
    try:
        with operator_channel(args) as channel:
            result = action(operator_pb2_grpc.OperatorStub(channel))
    except CliError as exc:
        print(f"weightgate: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"weightgate: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if isinstance(result, int):
        return result
    print(result)
    return 0


def _dispatch(stub: operator_pb2_grpc.OperatorStub, args: argparse.Namespace) -> str:
    from verifier.boot_reference_cli import run_boot_reference_command  # noqa: PLC0415
    from verifier.gate_cli import run_gate_command  # noqa: PLC0415 - gate_cli imports this module
    from verifier.policy_cli import run_policy_command  # noqa: PLC0415 - likewise
    from verifier.proposal_cli import run_proposal_command  # noqa: PLC0415 - likewise
    from verifier.trust_cli import run_trust_command  # noqa: PLC0415 - likewise

    runs = (
        run_gate_command,
        run_proposal_command,
        run_trust_command,
        run_boot_reference_command,
        run_policy_command,
    )
    for run in runs:
        output = run(stub, args)
        if output is not None:
            return output
    command = (args.command, args.subcommand)
    if command == ("hosts", "list"):
        return hosts_list(stub, as_json=args.json)
    if command == ("hosts", "add"):
        return hosts_add(stub, args.host, args.group)
    if command == ("reference", "set"):
        only = None if args.only is None else {b: parse_pcr_list(args.only) for b in ("sha1",
                                               "sha256", "sha384", "sha512")}  # fmt: skip
        return reference_set(
            stub, args.group, parse_pcrs_json(args.pcrs), only, justification=args.justification
        )
    if command == ("reference", "show"):
        return reference_show(stub, args.group, as_json=args.json)
    raise CliError(f"unknown command {' '.join(command)}")
