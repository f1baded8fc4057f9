"""Atomic, private state files: temp file (0600), fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from weightgate.checkpoint.durable import fsync_directory

__all__ = ["fsync_directory", "write_atomically"]


def write_atomically(state_dir: Path, name: str, data: bytes) -> None:
    """Replace ``state_dir/name`` with ``data``: readers see the old or the new file,
    never a torn one, and the new one survives a crash once this returns."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = state_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, state_dir / name)
    fsync_directory(state_dir)
