"""Release records (``state_dir/releases.json``) and erasing a release's plaintext.

A record is written, state ``held``, as soon as the data keys of a release are
unwrapped and before any plaintext is written, so that a crash at any later point
leaves a record that the next start erases (a release that was not ``ready`` cannot
be finished without the keys, which lived only in memory). Erased records are kept,
a bounded number of them, as the host's own account of what it erased.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from agent.statefile import fsync_directory, write_atomically
from agent.weights import download_dir

RELEASES_FILE = "releases.json"
# Erased records are history only; keep enough to audit recent revocations.
MAX_ERASED_RECORDS = 200

State = Literal["held", "erased"]


@dataclass(frozen=True)
class ReleaseRecord:
    release_id: str
    manifest_digest: bytes
    target_dir: Path
    lease_expires_at: datetime  # UTC
    state: State
    files: tuple[str, ...]  # manifest paths, relative to target_dir
    ready: bool = False  # every file decrypted into target_dir
    erased_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        return self.state == "held" and self.lease_expires_at > now

    def to_doc(self) -> dict[str, object]:
        return {
            "release_id": self.release_id,
            "manifest_digest": self.manifest_digest.hex(),
            "target_dir": str(self.target_dir),
            "lease_expires_at": self.lease_expires_at.isoformat(),
            "state": self.state,
            "files": list(self.files),
            "ready": self.ready,
            "erased_at": self.erased_at.isoformat() if self.erased_at else None,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, object]) -> ReleaseRecord:
        state = doc["state"]
        if state not in ("held", "erased"):
            raise ValueError(f"unknown release state {state!r}")
        files = doc["files"]
        if not isinstance(files, list):
            raise TypeError("files is not a list")
        erased_at = doc.get("erased_at")
        return cls(
            release_id=str(doc["release_id"]),
            manifest_digest=bytes.fromhex(str(doc["manifest_digest"])),
            target_dir=Path(str(doc["target_dir"])),
            lease_expires_at=_utc(str(doc["lease_expires_at"])),
            state=state,
            files=tuple(str(f) for f in files),
            ready=bool(doc.get("ready", False)),
            erased_at=_utc(str(erased_at)) if erased_at else None,
        )


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without time zone: {text!r}")
    return moment.astimezone(UTC)


class ReleaseBook:
    """The release records of this host, kept in memory and saved atomically (0600)."""

    def __init__(self, state_dir: Path, records: Iterable[ReleaseRecord] = ()) -> None:
        self._state_dir = state_dir
        self._records = {r.release_id: r for r in records}

    @classmethod
    def load(cls, state_dir: Path) -> ReleaseBook:
        """Raises ValueError when the file exists but cannot be read: unlike other
        state, a lost release record would leave plaintext that nothing erases."""
        path = state_dir / RELEASES_FILE
        try:
            doc = json.loads(path.read_text())
            records = [ReleaseRecord.from_doc(r) for r in doc["releases"]]
        except FileNotFoundError:
            return cls(state_dir)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: unreadable release records: {e}") from e
        return cls(state_dir, records)

    def get(self, release_id: str) -> ReleaseRecord | None:
        return self._records.get(release_id)

    def records(self) -> list[ReleaseRecord]:
        return list(self._records.values())

    def held(self) -> list[ReleaseRecord]:
        return [r for r in self._records.values() if r.state == "held"]

    def put(self, record: ReleaseRecord) -> None:
        """Record (blocking: writes and fsyncs the file)."""
        self._records[record.release_id] = record
        erased = sorted(
            (r for r in self._records.values() if r.state == "erased"),
            key=lambda r: r.erased_at or r.lease_expires_at,
        )
        for old in erased[:-MAX_ERASED_RECORDS]:
            del self._records[old.release_id]
        doc = {"releases": [r.to_doc() for r in self._records.values()]}
        write_atomically(self._state_dir, RELEASES_FILE, json.dumps(doc, indent=2).encode())

    def mark_erased(self, record: ReleaseRecord, now: datetime) -> ReleaseRecord:
        erased = replace(record, state="erased", ready=False, erased_at=now)
        self.put(erased)
        return erased


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def erase_files(record: ReleaseRecord, state_dir: Path) -> int:
    """Delete the release's plaintext from its target_dir, decryption leftovers and
    directories it emptied included, fsync every directory touched, then remove
    the downloaded ciphertext. Idempotent; returns the number of files deleted.

    A path whose directory resolves outside target_dir (a symlink planted there) is
    left alone: erasing must not become a way to delete files elsewhere.
    """
    removed = 0
    touched: set[Path] = set()
    root = record.target_dir
    real_root = root.resolve() if root.exists() else None
    for relative in record.files:
        path = root / relative
        parent = path.parent
        if real_root is None or not parent.exists() or not _under(parent.resolve(), real_root):
            continue
        # decrypt_file's temp files (".<name>.<random>.part") survive only a crash.
        for victim in (path, *parent.glob(f".{path.name}.*.part")):
            with contextlib.suppress(FileNotFoundError):
                victim.unlink()
                removed += 1
        touched.add(parent)
    for directory in sorted(touched, key=lambda d: len(d.parts), reverse=True):
        current = directory
        while current != root and _under(current, root):
            try:
                current.rmdir()  # only if empty: the operator's own files stay
            except OSError:
                break
            touched.add(current.parent)
            current = current.parent
    for directory in touched:
        if directory.exists():
            fsync_directory(directory)
    downloads = download_dir(state_dir, record.manifest_digest)
    if downloads.exists():
        shutil.rmtree(downloads)
        fsync_directory(downloads.parent)
    return removed


def now_utc() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "RELEASES_FILE",
    "ReleaseBook",
    "ReleaseRecord",
    "erase_files",
    "now_utc",
]
