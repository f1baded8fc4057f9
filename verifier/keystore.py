"""The verifier's key store: the key-encryption key (KEK) and the manifest signing key.

``KeyStore`` is the interface the rest of the verifier uses; ``FileKeyStore`` keeps both
keys in one local file. A KMS or a PKCS#11 HSM can implement the same Protocol later
without the callers changing (wrapping becomes the KMS's encrypt with context as AAD /
encryption context, signing its Ed25519 sign).

File format (version 1), 102 bytes::

    MAGIC "WGKS" || version (u16 BE) || KEK (32) || Ed25519 seed (32) || SHA-256 of the above

The checksum only catches corruption (a torn copy, a wrong file); confidentiality and
integrity of the file rest on its permissions, which ``open`` insists on.

Wrapped data key (version 1), 61 bytes::

    version (1) || nonce (12, random) || AES-256-GCM(KEK, nonce, data key, AAD) (32 + 16)
    AAD = WRAP_DOMAIN || context

Random nonces are safe here: NIST SP 800-38D allows 2**32 random-nonce encryptions under
one key, and a KEK wraps one key per checkpoint file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import struct
from pathlib import Path
from typing import Final, NoReturn, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from weightgate.checkpoint.durable import fsync_directory

DATA_KEY_SIZE: Final = 32
_MAGIC: Final = b"WGKS"
_VERSION: Final = 1
_BODY: Final = struct.Struct(">4sH32s32s")
_FILE_SIZE: Final = _BODY.size + 32
_WRAP_VERSION: Final = 1
_NONCE_SIZE: Final = 12
WRAPPED_KEY_SIZE: Final = 1 + _NONCE_SIZE + DATA_KEY_SIZE + 16
# Separates data-key wrapping from any other use the KEK might get.
WRAP_DOMAIN: Final = b"weightgate.keystore.wrap.v1\x00"
# Contexts are identifiers (digests, ids), never bulk data.
MAX_CONTEXT_SIZE: Final = 1024


class KeyStoreError(Exception):
    """The key store cannot be used, or a wrapped key did not authenticate.

    Messages name paths and reasons, never key material.
    """


class KeyStore(Protocol):
    def wrap_data_key(self, key: bytes, *, context: bytes) -> bytes:
        """Encrypt a 32-byte data key, bound to ``context`` (e.g. manifest digest || file id)."""
        ...

    def unwrap_data_key(self, wrapped: bytes, *, context: bytes) -> bytes:
        """Recover a data key; raises KeyStoreError unless ``context`` is the one it was
        wrapped with and the wrapped bytes are intact."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature over ``data``."""
        ...

    def signing_public_key(self) -> Ed25519PublicKey: ...


def _check_context(context: bytes) -> None:
    if not context or len(context) > MAX_CONTEXT_SIZE:
        raise ValueError(f"context must be 1..{MAX_CONTEXT_SIZE} bytes")


class FileKeyStore:
    """Both keys in one 0600 file owned by the verifier's user.

    Instances do not expose, print or pickle key material.
    """

    __slots__ = ("_aead", "_path", "_signing_key")

    def __init__(self, path: Path, kek: bytes, signing_seed: bytes) -> None:
        # Private: use create() or open(), which enforce the file's permissions.
        self._path = path
        self._aead = AESGCM(kek)
        self._signing_key = Ed25519PrivateKey.from_private_bytes(signing_seed)

    @classmethod
    def create(cls, path: Path) -> FileKeyStore:
        """Generate fresh keys into a new file at ``path``; never overwrites.

        The file is written in full under a temporary name created with O_EXCL and mode
        0600, fsynced, then hard-linked to ``path`` (which fails if ``path`` exists), so
        ``path`` never holds a partial key file and never has looser permissions.
        """
        path = Path(path)
        kek, seed = secrets.token_bytes(32), secrets.token_bytes(32)
        body = _BODY.pack(_MAGIC, _VERSION, kek, seed)
        data = body + hashlib.sha256(body).digest()
        temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)  # the umask can only remove bits; be explicit anyway
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temp, path)
            except FileExistsError:
                raise KeyStoreError(f"key store {path} already exists; not overwriting") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        fsync_directory(path.parent)
        return cls(path, kek, seed)

    @classmethod
    def open(cls, path: Path) -> FileKeyStore:
        """Load an existing key store. Checks, in order: not a symlink, a regular file,
        owned by the current user, no group or other permission bits, exact size, magic,
        version, checksum."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise KeyStoreError(f"cannot open key store {path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise KeyStoreError(f"key store {path} is not a regular file")
            if info.st_uid != os.geteuid():
                raise KeyStoreError(
                    f"key store {path} is owned by uid {info.st_uid}, not {os.geteuid()}"
                )
            if info.st_mode & 0o077:
                raise KeyStoreError(
                    f"key store {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
                    "it must not be accessible to group or others (chmod 600)"
                )
            data = os.read(fd, _FILE_SIZE + 1)
        finally:
            os.close(fd)
        if len(data) != _FILE_SIZE:
            raise KeyStoreError(f"key store {path} is {len(data)} bytes, not {_FILE_SIZE}")
        magic, version, kek, seed = _BODY.unpack(data[: _BODY.size])
        if magic != _MAGIC:
            raise KeyStoreError(f"{path} is not a weightgate key store")
        if version != _VERSION:
            raise KeyStoreError(f"key store {path} has version {version}, expected {_VERSION}")
        if not secrets.compare_digest(hashlib.sha256(data[: _BODY.size]).digest(), data[-32:]):
            raise KeyStoreError(f"key store {path} is corrupt (checksum mismatch)")
        return cls(path, kek, seed)

    @property
    def path(self) -> Path:
        return self._path

    def wrap_data_key(self, key: bytes, *, context: bytes) -> bytes:
        if len(key) != DATA_KEY_SIZE:
            raise ValueError(f"data key must be {DATA_KEY_SIZE} bytes")
        _check_context(context)
        nonce = secrets.token_bytes(_NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, bytes(key), WRAP_DOMAIN + context)
        return bytes([_WRAP_VERSION]) + nonce + sealed

    def unwrap_data_key(self, wrapped: bytes, *, context: bytes) -> bytes:
        _check_context(context)
        if len(wrapped) != WRAPPED_KEY_SIZE or wrapped[0] != _WRAP_VERSION:
            raise KeyStoreError("wrapped key has the wrong size or version")
        nonce, sealed = wrapped[1 : 1 + _NONCE_SIZE], wrapped[1 + _NONCE_SIZE :]
        try:
            return self._aead.decrypt(nonce, sealed, WRAP_DOMAIN + context)
        except InvalidTag:
            raise KeyStoreError(
                "wrapped key does not authenticate (another key store, another context, "
                "or corrupted)"
            ) from None

    def sign(self, data: bytes) -> bytes:
        return self._signing_key.sign(data)

    def signing_public_key(self) -> Ed25519PublicKey:
        return self._signing_key.public_key()

    def public_key_fingerprint(self) -> str:
        """SHA-256 of the raw Ed25519 public key, hex: safe to log and to pin."""
        raw = self.signing_public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return hashlib.sha256(raw).hexdigest()

    def __repr__(self) -> str:
        fingerprint = self.public_key_fingerprint()[:16]
        return f"FileKeyStore(path={str(self._path)!r}, signing_key={fingerprint})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a key store cannot be pickled or copied")
