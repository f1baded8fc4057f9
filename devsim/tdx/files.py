"""Files of a simulated TDX guest: private directories and keys, reads that name the file.

Directories are 0700 and the private keys 0600 whatever the umask, created with
O_EXCL so that a guest directory never writes through a file (or link) someone
placed first. A key that others can read is refused on load: whoever can read
the attestation key can sign quotes as the simulated TD's quoting enclave.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "TdxGuestError",
    "key_pem",
    "make_private_dir",
    "read_file",
    "read_private_key",
    "write_private",
    "write_public",
]

# Every file written here is a few KiB; the bound keeps a wrong path (a device,
# a huge file) from being read whole.
MAX_FILE_BYTES = 1 << 20


class TdxGuestError(Exception):
    """A simulated TDX guest directory cannot be created or used; the message names the file."""


def make_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path


def _write(path: Path, data: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise TdxGuestError(f"{path}: already exists") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # the umask filtered os.open's mode
        handle.write(data)


def write_private(path: Path, data: bytes) -> None:
    _write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    _write(path, data, 0o644)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def read_file(path: Path) -> bytes:
    """The file's bytes, or TdxGuestError naming it."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise TdxGuestError(f"{path}: missing") from None
    except OSError as exc:
        raise TdxGuestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise TdxGuestError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return data


def read_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A P-256 key from a file that only its owner can read."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise TdxGuestError(f"{path}: missing") from None
    if mode & 0o077:
        raise TdxGuestError(f"{path}: readable by group or others (mode {mode:o}); want 0600")
    try:
        key = serialization.load_pem_private_key(read_file(path), password=None)
    except (ValueError, TypeError) as exc:
        raise TdxGuestError(f"{path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise TdxGuestError(f"{path}: not an ECDSA P-256 key")
    return key
