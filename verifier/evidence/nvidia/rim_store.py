"""A content-addressed store of verified RIMs, so that GPU verification needs no network.

RIMs are keyed by the SHA-256 of their exact XML bytes: NVIDIA reissues different
contents under one tag id (the 2023 and 2024 ``96.00.5E.00.01`` VBIOS RIMs differ
at index 9), so a tag id maps to a *set* of digests. Nothing enters the store
unverified, and what comes out is verified again (the disk is not a trust
anchor, and ``at`` may differ from the import time).

Layout of the directory (mode 0700)::

    rims/<sha256>.xml                  the exact bytes, written atomically
    by-id/<sha256(tag id)>/<sha256>    empty marker: this content has this tag id
    by-rim-id/<sha256(RIM id)>/<sha256>  empty marker: imported under NVIDIA's RIM id
                                       (NV_GPU_DRIVER_GH100_545.00, ...), the name
                                       verify_devices asks for; SWID tag ids are hashes
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509

from verifier.evidence.nvidia.rim import MAX_RIM_BYTES, VerifiedRim, verify_rim
from verifier.evidence.nvidia.rim_cache import verify_rim_cached
from verifier.verdict import VerificationError

__all__ = ["FileRimStore", "RimStoreError"]

_DIGEST = re.compile(r"[0-9a-f]{64}")


class RimStoreError(Exception):
    """The store directory is unusable (permissions, a file that is not what its name says)."""


def _write_atomically(path: Path, data: bytes) -> None:
    # Write to a temporary file in the same directory, fsync, then rename: a reader
    # never sees a half-written RIM, even after a crash.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Anyone who can write here could plant a RIM; it would still have to
        # verify, but a readable/writable store is a misconfiguration to refuse.
        raise RimStoreError(f"{path} is accessible to other users (mode {mode:o}); want 0700")
    return path


class FileRimStore:
    """Verified RIMs in a private directory; see the module docstring for the layout."""

    def __init__(self, directory: Path, *, pinned_roots: Sequence[x509.Certificate]) -> None:
        if not pinned_roots:
            raise ValueError("a RIM store needs the pinned RIM root(s)")
        self._root = _private_dir(Path(directory))
        self._rims = _private_dir(self._root / "rims")
        self._by_id = _private_dir(self._root / "by-id")
        self._by_rim_id = _private_dir(self._root / "by-rim-id")
        self._pinned_roots = tuple(pinned_roots)

    def _id_dir(self, tag_id: str) -> Path:
        # Tag ids are free text in SWID; hashing them makes a safe file name.
        return self._by_id / hashlib.sha256(tag_id.encode()).hexdigest()

    def _rim_id_dir(self, rim_id: str) -> Path:
        return self._by_rim_id / hashlib.sha256(rim_id.encode()).hexdigest()

    def verify(self, xml_bytes: bytes, *, at: datetime) -> VerifiedRim:
        """verify_rim with the store's pinned roots, storing nothing."""
        return verify_rim(xml_bytes, pinned_roots=self._pinned_roots, at=at)

    def has(self, digest: str) -> bool:
        """Whether content with this digest is stored (unverified: a lookup, not a use)."""
        return bool(_DIGEST.fullmatch(digest)) and (self._rims / f"{digest}.xml").is_file()

    def import_bytes(
        self, xml_bytes: bytes, *, at: datetime, rim_id: str | None = None
    ) -> VerifiedRim:
        """Verify (raising VerificationError) and only then store the exact bytes.

        ``rim_id`` (NVIDIA's name for the RIM, which the signed content does not
        fully carry) adds the content to that id's set; the caller checks that the
        id agrees with the content (``offline_rims.check_rim_id``).
        """
        rim = verify_rim(xml_bytes, pinned_roots=self._pinned_roots, at=at)
        target = self._rims / f"{rim.sha256}.xml"
        if not target.exists():
            _write_atomically(target, xml_bytes)
        marker_dir = self._id_dir(rim.tag_id)
        marker_dir.mkdir(mode=0o700, exist_ok=True)
        (marker_dir / rim.sha256).touch(mode=0o600, exist_ok=True)
        if rim_id is not None:
            id_dir = self._rim_id_dir(rim_id)
            id_dir.mkdir(mode=0o700, exist_ok=True)
            (id_dir / rim.sha256).touch(mode=0o600, exist_ok=True)
        return rim

    def import_rim(self, path: Path, *, at: datetime) -> VerifiedRim:
        """``weightgate reference import-rim FILE``: verify the file at ``at``, then store it."""
        with Path(path).open("rb") as handle:
            # Read one byte past the limit so that verify_rim reports the size.
            data = handle.read(MAX_RIM_BYTES + 1)
        return self.import_bytes(data, at=at)

    def digests_for_rim_id(self, rim_id: str) -> frozenset[str]:
        """Digests of every content imported under NVIDIA's RIM id (possibly several)."""
        marker_dir = self._rim_id_dir(rim_id)
        if not marker_dir.is_dir():
            return frozenset()
        return frozenset(p.name for p in marker_dir.iterdir() if _DIGEST.fullmatch(p.name))

    def load_bytes(self, digest: str) -> bytes:
        """The stored bytes with this digest, unverified (verify_rim them before use).

        Raises KeyError if absent, RimStoreError if they no longer hash to the name.
        """
        if not _DIGEST.fullmatch(digest):
            raise KeyError(digest)
        path = self._rims / f"{digest}.xml"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(digest) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise RimStoreError(f"{path} does not hash to its name")
        return data

    def rims_for_rim_id(
        self, rim_id: str, *, at: datetime
    ) -> tuple[tuple[VerifiedRim, bytes], ...]:
        """Every content imported under NVIDIA's ``rim_id`` that verifies at ``at``, with its bytes.

        Contents that no longer verify (expired signers) are left out. Each is read
        (and its digest checked) every time, and verified with verify_rim_cached:
        the same bytes and roots reuse an earlier verification inside its window.
        """
        found = []
        for digest in sorted(self.digests_for_rim_id(rim_id)):
            try:
                data = self.load_bytes(digest)
                rim = verify_rim_cached(data, pinned_roots=self._pinned_roots, at=at)
            except (KeyError, VerificationError):
                continue
            found.append((rim, data))
        return tuple(found)

    def digests_for(self, tag_id: str) -> frozenset[str]:
        """Digests of every stored content with this tag id (possibly several)."""
        marker_dir = self._id_dir(tag_id)
        if not marker_dir.is_dir():
            return frozenset()
        return frozenset(p.name for p in marker_dir.iterdir() if _DIGEST.fullmatch(p.name))

    def load(self, digest: str, *, at: datetime) -> VerifiedRim:
        """The stored RIM with this digest, verified again at ``at``.

        Raises KeyError if absent, RimStoreError if the file's bytes no longer
        hash to its name, VerificationError if it does not verify at ``at``.
        """
        data = self.load_bytes(digest)
        return verify_rim(data, pinned_roots=self._pinned_roots, at=at)

    def rims_for(self, tag_id: str, *, at: datetime) -> tuple[VerifiedRim, ...]:
        """Every stored content under ``tag_id`` that verifies at ``at``, by digest.

        Contents that no longer verify (expired signers) are left out; a caller
        that finds none reports the RIM as unavailable.
        """
        found = []
        for digest in sorted(self.digests_for(tag_id)):
            try:
                rim = self.load(digest, at=at)
            except (KeyError, VerificationError):
                continue
            if rim.tag_id != tag_id:
                raise RimStoreError(f"marker for {tag_id!r} points at a RIM with another tag id")
            found.append(rim)
        return tuple(found)
