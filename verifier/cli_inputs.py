"""What the offline commands share: reading input files, parsing options, exit 2.

``evidence verify tpm|nvgpu|snp|tdx``, ``evidence replay|inspect``, ``reference
import-rim`` and ``reference snp-measure`` read files an operator names and options
typed by hand. A bad one is a :class:`UsageError`: one line that names the file or
option, printed after the command's name, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from verifier.evidence.bounded_file import read_bounded
from verifier.evidence.report import EXIT_USAGE, EvidenceReport, exit_status

__all__ = [
    "UsageError",
    "add_described_parser",
    "exit_help",
    "parse_at",
    "parse_hex",
    "parse_input",
    "read_input",
    "run_report",
    "usage_exit",
]

T = TypeVar("T")


class UsageError(Exception):
    """Bad usage or an unreadable input file: exit 2 with this one line."""


def add_described_parser(subparsers: Any, name: str, *, help: str, description: str) -> Any:
    """A subcommand whose ``--help`` shows ``description`` as written (line breaks kept)."""
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def exit_help(warnings: str) -> str:
    """The exit-status paragraph of a ``verify`` command's help; ``warnings``: examples."""
    return (
        "exit status: 0 affirming, 1 evidence rejected, 2 unreadable input or bad usage,\n"
        f"3 accepted with warnings ({warnings})."
    )


def usage_exit(command: str, error: Exception) -> int:
    """Print ``weightgate COMMAND: ERROR`` to stderr; the usage exit status (2)."""
    print(f"weightgate {command}: {error}", file=sys.stderr)
    return EXIT_USAGE


def run_report(
    verify: Callable[[], EvidenceReport],
    render: Callable[[EvidenceReport], str],
    *,
    as_json: bool,
    errors: tuple[type[Exception], ...] = (UsageError,),
) -> int:
    """Run an ``evidence`` command: its report (JSON or ``render``) and exit status."""
    try:
        report = verify()
    except errors as exc:
        return usage_exit("evidence", exc)
    print(json.dumps(report.to_json(), indent=2) if as_json else render(report))
    return exit_status(report.verdict)


def read_input(path: Path, what: str, limit: int) -> bytes:
    """The bytes of the ``what`` file ``path``, at most ``limit``."""
    return read_bounded(path, limit, UsageError, what=what)


def parse_input(
    path: Path,
    what: str,
    limit: int,
    parse: Callable[[bytes], T],
    errors: type[Exception] | tuple[type[Exception], ...],
) -> T:
    """``parse`` of the ``what`` file ``path``; its ``errors`` become ``WHAT PATH: ...``."""
    data = read_input(path, what, limit)
    try:
        return parse(data)
    except errors as exc:
        raise UsageError(f"{what} {path}: {exc}") from None


def parse_at(text: str | None) -> datetime:
    """``--at``: an ISO 8601 time (UTC when it names no zone), or now."""
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {text!r}: not an ISO 8601 time") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def parse_hex(option: str, text: str, error: Callable[[str], Exception] = UsageError) -> bytes:
    """The bytes of ``option``'s hex value (``0x`` and surrounding blanks allowed)."""
    try:
        return bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        raise error(f"{option} {text!r}: not hex") from None
