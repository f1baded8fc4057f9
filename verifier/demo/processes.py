"""The demo's process plumbing: run our console scripts, start and stop daemons by pid.

Every daemon started here is registered on an ExitStack that stops it (SIGTERM, then
SIGKILL after 10 s) whatever happens, so a failed or interrupted demo leaves nothing
running.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

WAIT_SECONDS = 40.0


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tool(name: str) -> str:
    """Our console scripts live beside the running interpreter (the venv's bin/)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def run(argv: list[str], *, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {result.stderr.strip()}")
    return result.stdout


def proposal_id(output: str) -> str:
    """The id in `weightgate ... set|assign|propose` output ("proposal <id>: ...")."""
    first = output.split()
    if len(first) < 2 or first[0] != "proposal":
        raise RuntimeError(f"expected a proposal, got: {output.strip()}")
    return first[1].rstrip(":")


def start(argv: list[str], log_path: Path, stack: ExitStack) -> subprocess.Popen[bytes]:
    log_file = stack.enter_context(log_path.open("wb"))
    process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    stack.callback(stop)
    return process


def wait_for(
    what: str, check: Callable[[], bool], processes: list[subprocess.Popen[bytes]]
) -> None:
    """Poll ``check`` until true; RuntimeError if a process exits or time runs out."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")
