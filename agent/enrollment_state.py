"""The agent's enrollment, saved in its state directory: which verifier, host id and AK.

Written atomically (temp file, fsync, rename, fsync the directory), so a crash
leaves the old state or the new one. An unreadable file counts as no enrollment:
the agent enrolls again rather than attesting with state it cannot trust.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from agent.statefile import write_atomically

__all__ = ["STATE_FILE", "EnrollmentState", "delete_state", "load_state", "save_state"]

STATE_FILE = "enrollment.json"


@dataclass(frozen=True)
class EnrollmentState:
    host_id: str
    verifier: str
    ak_name: bytes
    ak_handle: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "host_id": self.host_id,
                "verifier": self.verifier,
                "ak_name": self.ak_name.hex(),
                "ak_handle": self.ak_handle,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> EnrollmentState:
        doc = json.loads(text)
        return cls(
            host_id=str(doc["host_id"]),
            verifier=str(doc["verifier"]),
            ak_name=bytes.fromhex(doc["ak_name"]),
            ak_handle=int(doc["ak_handle"]),
        )


def load_state(state_dir: Path) -> EnrollmentState | None:
    """The saved enrollment, or None when there is none or it is unreadable."""
    try:
        return EnrollmentState.from_json((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a corrupt file is as good as none: enroll again


def save_state(state_dir: Path, state: EnrollmentState) -> None:
    """Write atomically: temp file, fsync, rename, fsync the directory."""
    write_atomically(state_dir, STATE_FILE, state.to_json().encode())


def delete_state(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()
