"""A tiny progress reporter for long byte-oriented work (encrypting checkpoints).

On a terminal it redraws one status line at most a few times a second; elsewhere
(logs, CI) it stays silent until ``finish`` prints one summary line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(count: float) -> str:
    for unit in _UNITS:
        if abs(count) < 1024 or unit == _UNITS[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class ProgressReporter:
    """Call with (bytes done, bytes total); call ``finish()`` once at the end."""

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        min_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        interactive: bool | None = None,
    ) -> None:
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._interval = min_interval
        self._clock = clock
        self._interactive = self._stream.isatty() if interactive is None else interactive
        self._start = clock()
        self._last_draw = float("-inf")
        self._done = 0
        self._total = 0

    def __call__(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        if not self._interactive:
            return
        now = self._clock()
        # Redrawing on every 4 MiB segment would cost more than it shows.
        if now - self._last_draw >= self._interval or done >= total:
            self._last_draw = now
            self._stream.write(f"\r{self._line(now)}\x1b[K")
            self._stream.flush()

    def finish(self) -> None:
        line = self._line(self._clock())
        self._stream.write(f"\r{line}\x1b[K\n" if self._interactive else f"{line}\n")
        self._stream.flush()

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        percent = f"{100 * self._done / self._total:5.1f}%" if self._total else "  -  "
        return (
            f"{self._label}: {format_bytes(self._done)} / {format_bytes(self._total)} "
            f"{percent}  {format_bytes(self._done / elapsed)}/s  {elapsed:.1f} s"
        )
