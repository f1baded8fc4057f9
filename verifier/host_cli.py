"""`weightgate hosts show` and `weightgate hosts watch`: one host in full, and live changes.

Both only talk to the verifier's Operator API. `watch` keeps one WatchHosts
stream open and prints a line per change as it arrives (JSON lines with
--json, flushed at once so a pipe sees them); Ctrl-C ends it with exit 0, a
lost or refused stream with a message on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import grpc

from verifier.gate_cli import release_document
from verifier.operator_cli import (
    HOST_STATUS_NAMES,
    RPC_TIMEOUT_SECONDS,
    TIER_NAMES,
    CliError,
    add_connection_arguments,
    call_verifier,
    first_reason,
    format_table,
    format_time,
    reasons_document,
    summary_document,
)
from weightgate.v1 import operator_pb2, operator_pb2_grpc

HOST_COMMANDS = frozenset({"show", "watch"})
# Stream endings that are not a refusal of the request: the watch was lost, and
# running the command again reconnects (and prints the current state again).
LOST = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
WATCH_DESCRIPTION = """\
Print one line per change of a host's trust status or site, as it happens:

  TIME  HOST  PREVIOUS -> NOW  CAUSE  REASON (or the new site)

CAUSE is what changed it: attestation, quarantine, enrolled, registered,
site_assigned; the first lines (cause "snapshot") are each host's state now,
unless --no-current. Ctrl-C stops watching (exit 0). If the stream is lost
(the verifier stopped or restarted, the network broke, or this watcher fell
too far behind) it says so on stderr and exits 1: run it again to reconnect.

examples:
  weightgate hosts watch                       every host
  weightgate hosts watch gpu-node-017 gpu-node-018 --no-current
  weightgate hosts watch --json | jq -c 'select(.status == "untrusted")'
"""


def add_host_commands(hosts_commands: Any) -> None:
    """Register `hosts show` and `hosts watch` on the `hosts` parser."""
    show = hosts_commands.add_parser(
        "show",
        help="one host in full: status and reasons, site, releases, verdicts, events",
        description="Show one host: its trust status and the reasons of its latest verdict, "
        "its site, the key releases it holds or held, its attestation history and events.",
    )
    show.add_argument("host", help="the host's id")
    show.add_argument(
        "--history",
        type=int,
        default=20,
        metavar="N",
        help="how many verdicts and events to show (default %(default)s)",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(show)

    watch = hosts_commands.add_parser(
        "watch",
        help="print each change of host trust status or site as it happens",
        description=WATCH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument(
        "hosts", nargs="*", metavar="HOST", help="the hosts to watch (default: every host)"
    )
    watch.add_argument(
        "--no-current", action="store_true", help="print changes only, not each host's state now"
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    add_connection_arguments(watch)


def run_host_command(args: argparse.Namespace) -> int:
    def action(stub: operator_pb2_grpc.OperatorStub) -> str | int:
        if args.subcommand == "watch":
            return watch_hosts(
                stub,
                args.hosts,
                include_current=not args.no_current,
                as_json=args.json,
                out=sys.stdout,
            )
        return hosts_show(stub, args.host, as_json=args.json, history=args.history)

    return call_verifier(args, action)


# -- hosts show ---------------------------------------------------------------------


def host_document(
    stub: operator_pb2_grpc.OperatorStub, host_id: str, *, history: int
) -> dict[str, Any]:
    if not 1 <= history <= 1000:
        raise CliError("--history: expected 1 to 1000")
    detail = stub.GetHost(
        operator_pb2.GetHostRequest(host_id=host_id, history_limit=history),
        timeout=RPC_TIMEOUT_SECONDS,
    )
    releases = stub.ListReleases(
        operator_pb2.ListReleasesRequest(host_id=host_id), timeout=RPC_TIMEOUT_SECONDS
    ).releases
    return summary_document(detail.summary) | {
        "site": detail.summary.site or None,
        "ak_name": detail.ak_name.hex(),
        "releases": [release_document(r) for r in releases],
        "history": [
            {
                "at": format_time(v.appraised_at, present=True),
                "tier": TIER_NAMES.get(v.tier, "unknown"),
                "reasons": reasons_document(v.reasons),
                "checks_run": list(v.checks_run),
                "result_id": v.result_id,
            }
            for v in detail.history
        ],
        "events": [
            {"at": format_time(e.at, present=True), "kind": e.kind, "detail": e.detail}
            for e in detail.events
        ],
    }


def hosts_show(
    stub: operator_pb2_grpc.OperatorStub, host_id: str, *, as_json: bool, history: int = 20
) -> str:
    document = host_document(stub, host_id, history=history)
    if as_json:
        return json.dumps(document, indent=2)
    attested = document["last_attestation"] or "never"
    lines = [
        f"host:    {document['host']}  (group {document['group']})",
        f"status:  {document['status']}  (last attestation: {attested})",
        f"site:    {document['site'] or '-  (none: no weights can be released to it)'}",
        f"AK name: {document['ak_name'] or '-'}",
        "",
        "reasons (latest verdict, or why quarantined):",
    ]
    lines += [f"  {r['code']}: {r['detail']}" for r in document["reasons"]] or ["  (none)"]
    lines += ["", "releases:"]
    releases = document["releases"]
    if releases:
        rows = [["MODEL", "STATE", "RELEASED", "LEASE UNTIL", "ERASED", "REASON"]]
        rows += [[r["model"], r["state"], r["released_at"] or "-", r["lease_expires_at"] or "-",
                  r["erased_at"] or "-", r["revocation_reason"] or "-"]
                 for r in releases]  # fmt: skip
        lines += ["  " + line for line in format_table(rows).splitlines()]
    else:
        lines.append("  (none)")
    lines += ["", "attestation history (newest first):"]
    for entry in document["history"]:
        lines.append(f"  {entry['at']}  {entry['tier']}")
        lines += [f"      {r['code']}: {r['detail']}" for r in entry["reasons"]]
    if not document["history"]:
        lines.append("  (none yet)")
    lines += ["", "events (newest first):"]
    events = document["events"]
    lines += [f"  {e['at']}  {e['kind']}  {e['detail']}" for e in events] or ["  (none)"]
    return "\n".join(lines)


# -- hosts watch --------------------------------------------------------------------


def change_document(change: operator_pb2.HostChange) -> dict[str, Any]:
    previous = change.previous_status
    # UNSPECIFIED: a snapshot, or a host that did not exist before.
    unspecified = previous == operator_pb2.HOST_STATUS_UNSPECIFIED
    return {
        "at": format_time(change.at, present=True),
        "cause": change.cause,
        "previous_status": None if unspecified else HOST_STATUS_NAMES.get(previous, "unknown"),
        **summary_document(change.host),
        "site": change.host.site or None,
    }


def change_line(change: operator_pb2.HostChange) -> str:
    document = change_document(change)
    detail = (
        f"site {document['site'] or '-'}"
        if document["cause"] == "site_assigned"
        else first_reason(document["reasons"])
    )
    transition = f"{document['previous_status'] or '-'} -> {document['status']}"
    return f"{document['at']}  {document['host']}  {transition}  {document['cause']}  {detail}"


def watch_hosts(
    stub: operator_pb2_grpc.OperatorStub,
    hosts: Sequence[str],
    *,
    include_current: bool,
    as_json: bool,
    out: TextIO,
) -> int:
    """Print changes until Ctrl-C (0) or until the stream ends (1, said on stderr)."""
    # No deadline: a watch lasts until it is stopped.
    call = stub.WatchHosts(
        operator_pb2.WatchHostsRequest(host_ids=list(hosts), include_current=include_current)
    )
    try:
        for change in call:
            line = json.dumps(change_document(change)) if as_json else change_line(change)
            print(line, file=out, flush=True)
    except KeyboardInterrupt:
        call.cancel()
        return 0
    except grpc.RpcError as exc:
        code = exc.code()
        if code in LOST:
            print(
                f"weightgate: lost the watch ({code.name}: {exc.details()}); "
                "run the command again to reconnect",
                file=sys.stderr,
            )
        else:
            print(f"weightgate: {code.name}: {exc.details()}", file=sys.stderr)
        return 1
    print("weightgate: the verifier ended the watch; run it again to reconnect", file=sys.stderr)
    return 1
