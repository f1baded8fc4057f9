"""The plumbing of the ``python -m devsim.X init DIR`` commands.

Bad input is one line on stderr and exit status 2, so scripts and people both
see at once what to fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

__all__ = ["USAGE_ERROR", "add_validity_days", "init_parser", "run_init"]

USAGE_ERROR = 2

_Made = TypeVar("_Made")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage first; one line is easier to act on.
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def init_parser(
    prog: str,
    description: str,
    *,
    init_help: str,
    init_description: str,
    init_epilog: str,
    directory_help: str,
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(the command's parser, its ``init`` subcommand taking DIR): add the other options."""
    parser = _Parser(prog=prog, description=description)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    init = commands.add_parser(
        "init",
        help=init_help,
        description=init_description,
        epilog=init_epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("directory", type=Path, metavar="DIR", help=directory_help)
    return parser, init


def add_validity_days(init: argparse.ArgumentParser, *, what: str, max_days: int) -> None:
    """``--validity-days D`` (default 30): how long ``what`` stay valid."""
    init.add_argument(
        "--validity-days",
        type=int,
        default=30,
        metavar="D",
        help=f"{what} stay valid D days, 1..{max_days} (default 30)",
    )


def run_init(
    prog: str,
    create: Callable[[], _Made],
    error: type[Exception],
    summary: Callable[[_Made], str],
) -> int:
    """Create, then print its one-line summary (0); ``error`` or OSError: one line, 2."""
    try:
        made = create()
    except (error, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    print(summary(made))
    return 0
