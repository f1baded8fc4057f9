"""Durability: a rename or a new file survives a crash only once its directory is fsynced.

Shared by everything that writes files the verifier or the agent must not lose
(decrypted checkpoints, encrypted blobs, the key store, agent state).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
