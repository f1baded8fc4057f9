"""Files of a simulator directory: private directories and keys, reads that name the file.

Directories are 0700 and private keys 0600 whatever the umask, created with
O_EXCL so that a simulator never writes through a file (or link) someone placed
first. A key that others can read is refused on load: whoever can read it can
sign as the simulated device. Every simulator raises its own error class (the
one its package exports), so the helpers that can fail are bound to it in a
:class:`SimulatorFiles`.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["MAX_FILE_BYTES", "SimulatorFiles", "key_pem", "make_private_dir"]

# Every file a simulator writes is a few KiB (an NVIDIA RIM about 20 KiB); the
# bound keeps a wrong path (a device, a huge file) from being read whole.
MAX_FILE_BYTES = 1 << 20


def make_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class SimulatorFiles:
    """The helpers that can fail, raising ``error`` with a message that names the file.

    ``key_curve`` is the one curve :meth:`read_private_key` accepts.
    """

    error: type[Exception]
    key_curve: ec.EllipticCurve

    def check_create(
        self, directory: Path, *, validity_days: int, max_validity_days: int, now: datetime
    ) -> None:
        """Refuse a bad ``--validity-days``, a naive ``now`` or a directory in use."""
        if isinstance(validity_days, bool) or not 1 <= validity_days <= max_validity_days:
            raise self.error(f"--validity-days must be 1..{max_validity_days}, got {validity_days}")
        if now.tzinfo is None:
            raise self.error("now must be timezone-aware")
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise self.error(f"{directory}: exists and is not an empty directory")

    def _write(self, path: Path, data: bytes, mode: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, mode)
        except FileExistsError:
            raise self.error(f"{path}: already exists") from None
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the umask filtered os.open's mode
            handle.write(data)

    def write_private(self, path: Path, data: bytes) -> None:
        self._write(path, data, 0o600)

    def write_public(self, path: Path, data: bytes) -> None:
        self._write(path, data, 0o644)

    def read_file(self, path: Path) -> bytes:
        """The file's bytes, or the error naming it."""
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise self.error(f"{path}: missing") from None
        except OSError as exc:
            raise self.error(f"{path}: cannot read: {exc.strerror or exc}") from None
        if len(data) > MAX_FILE_BYTES:
            raise self.error(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        return data

    def read_private_key(self, path: Path) -> ec.EllipticCurvePrivateKey:
        """A key on ``key_curve`` from a file that only its owner can read."""
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            raise self.error(f"{path}: missing") from None
        if mode & 0o077:
            raise self.error(f"{path}: readable by group or others (mode {mode:o}); want 0600")
        try:
            key = serialization.load_pem_private_key(self.read_file(path), password=None)
        except (ValueError, TypeError) as exc:
            raise self.error(f"{path}: not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, type(self.key_curve)
        ):
            raise self.error(f"{path}: not an ECDSA P-{self.key_curve.key_size} key")
        return key

    def read_json_object(
        self, path: Path, *, format_version: int, keys: frozenset[str]
    ) -> dict[str, object]:
        """A JSON object of format ``format_version`` with no key outside ``keys``."""
        try:
            doc = json.loads(self.read_file(path))
        except (ValueError, RecursionError):
            raise self.error(f"{path}: not JSON") from None
        if not isinstance(doc, dict):
            raise self.error(f"{path}: not a JSON object")
        if doc.get("format") != format_version:
            raise self.error(f"{path}: format must be {format_version}")
        unknown = doc.keys() - keys
        if unknown:
            raise self.error(f"{path}: unknown keys {sorted(unknown)}")
        return doc

    def certificates(self, path: Path, count: int) -> list[x509.Certificate]:
        """Exactly ``count`` PEM certificates."""
        try:
            certificates = x509.load_pem_x509_certificates(self.read_file(path))
        except ValueError:
            raise self.error(f"{path}: not PEM certificates") from None
        if len(certificates) != count:
            raise self.error(f"{path}: holds {len(certificates)} certificates, expected {count}")
        return certificates

    def hex_bytes(self, value: object, size: int, what: str, path: Path) -> bytes:
        """``value`` (``what`` in ``path``) as ``size`` bytes of hex."""
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else None
        except ValueError:
            raw = None
        if raw is None or len(raw) != size:
            raise self.error(f"{path}: {what} must be {size} bytes of hex")
        return raw

    def timestamp(self, doc: dict[str, object], key: str, path: Path) -> datetime:
        """``doc[key]`` as an ISO 8601 time with a zone."""
        value = doc.get(key)
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise self.error(f"{path}: {key} must be an ISO 8601 time with a zone")
        return parsed
