"""The real `weightgate-agent run` as a subprocess, for end-to-end tests."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AGENT = Path(sys.executable).parent / "weightgate-agent"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stamp(at: Any) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime."""
    moment: datetime = at.ToDatetime(tzinfo=UTC)
    return moment


class AgentProcess:
    """One agent process writing JSON log lines to `log` (appended across restarts)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, config: Path) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(AGENT), "run", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; always reaps the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def events(self, name: str | None = None, **match: object) -> list[dict[str, Any]]:
        """The agent's JSON log lines, optionally of one event name and field values."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a stray non-JSON line (e.g. from the TSS) is not ours to judge
            if (
                isinstance(entry, dict)
                and (name is None or entry.get("event") == name)
                and all(entry.get(k) == v for k, v in match.items())
            ):
                found.append(entry)
        return found

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no agent log)"
