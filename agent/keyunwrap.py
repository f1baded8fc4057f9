"""Unwrap data keys released by the verifier, with the transport key the TPM
decrypted (``agent.collectors.binding_key.unwrap_transport_key``).

Format (written by the verifier's ``verifier/keyrelease/wrap.py``; keep in step):

``wrapped_data_keys = b"WGK1" || nonce (12 bytes) || AES-256-GCM ciphertext || tag (16)``,
key = the 32-byte transport key, AAD = ``b"WGK1" || context``. The plaintext is
``count (u16 BE)`` then, per key in strictly ascending order of UTF-8 name:
``name_len (u8) || name (UTF-8) || key_len (u16 BE) || key``. Bounds: 1..MAX_KEYS
keys, names 1..255 bytes, keys 1..MAX_KEY_BYTES bytes; nothing may follow.

``context`` binds host id, manifest digest and lease id: the agent passes the
values it expects, so keys released for another host, manifest or lease fail
authentication instead of being used.

Plaintext keys live only in memory. Python cannot guarantee erasure: ``bytes``
are immutable, and the interpreter and OpenSSL may keep copies. Intermediate
buffers are ``bytearray`` and overwritten here; callers should hold the
transport key in a ``bytearray`` and :func:`wipe` it once done.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MAGIC", "KeyUnwrapError", "unwrap_data_keys", "wipe"]

MAGIC = b"WGK1"
NONCE_SIZE = 12
TAG_SIZE = 16
TRANSPORT_KEY_SIZE = 32
# Same bounds as the verifier: a release never carries more, so more is an error.
MAX_KEYS = 1024
MAX_KEY_BYTES = 64
_MAX_NAME_BYTES = 255
_MAX_PLAINTEXT = 2 + MAX_KEYS * (1 + _MAX_NAME_BYTES + 2 + MAX_KEY_BYTES)


class KeyUnwrapError(Exception):
    """The wrapped keys are malformed or do not authenticate; nothing was released."""


def wipe(buffer: bytearray) -> None:
    """Overwrite ``buffer`` with zeros (best effort, see the module docstring)."""
    buffer[:] = bytes(len(buffer))


def unwrap_data_keys(
    transport_key: bytes | bytearray, wrapped_blob: bytes, context: bytes
) -> dict[str, bytes]:
    """Decrypt and parse the data keys; raise KeyUnwrapError on any failure.

    Checks, in order: the header (magic, length bounds), AES-256-GCM
    authentication under ``transport_key`` with ``context`` in the AAD, then the
    plaintext encoding (count, canonical order, bounds, no trailing bytes).
    """
    if len(transport_key) != TRANSPORT_KEY_SIZE:
        raise KeyUnwrapError(f"transport key is {len(transport_key)} bytes, not 32")
    blob = bytes(wrapped_blob)
    if blob[: len(MAGIC)] != MAGIC:
        raise KeyUnwrapError("wrapped data keys: bad magic (not format WGK1)")
    header = len(MAGIC) + NONCE_SIZE
    if not header + TAG_SIZE < len(blob) <= header + _MAX_PLAINTEXT + TAG_SIZE:
        raise KeyUnwrapError(f"wrapped data keys: {len(blob)} bytes is out of bounds")
    nonce = blob[len(MAGIC) : header]
    try:
        plaintext = bytearray(
            AESGCM(transport_key).decrypt(nonce, blob[header:], MAGIC + bytes(context))
        )
    except InvalidTag:
        # Wrong transport key, tampered blob, or a context (host, manifest, lease)
        # other than the one the verifier wrapped for.
        raise KeyUnwrapError(
            "wrapped data keys do not authenticate (wrong key or context)"
        ) from None
    try:
        return _decode(plaintext)
    finally:
        wipe(plaintext)


def _decode(plaintext: bytearray) -> dict[str, bytes]:
    view = memoryview(plaintext)
    try:
        if len(view) < 2:
            raise KeyUnwrapError("wrapped data keys: truncated count")
        count = int.from_bytes(view[:2], "big")
        if not 1 <= count <= MAX_KEYS:
            raise KeyUnwrapError(f"wrapped data keys: count {count} out of 1..{MAX_KEYS}")
        offset = 2
        keys: dict[str, bytes] = {}
        previous = b""
        for _ in range(count):
            if offset + 1 > len(view):
                raise KeyUnwrapError("wrapped data keys: truncated name length")
            name_len = view[offset]
            offset += 1
            raw_name = bytes(view[offset : offset + name_len])
            offset += name_len
            if not name_len or len(raw_name) != name_len or offset + 2 > len(view):
                raise KeyUnwrapError("wrapped data keys: truncated or empty name")
            if raw_name <= previous:
                # Canonical order means one encoding per key set, and no duplicates.
                raise KeyUnwrapError("wrapped data keys: names not strictly ascending")
            previous = raw_name
            key_len = int.from_bytes(view[offset : offset + 2], "big")
            offset += 2
            if not 1 <= key_len <= MAX_KEY_BYTES or offset + key_len > len(view):
                raise KeyUnwrapError(f"wrapped data keys: bad key length {key_len}")
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                raise KeyUnwrapError("wrapped data keys: name is not UTF-8") from None
            keys[name] = bytes(view[offset : offset + key_len])
            offset += key_len
        if offset != len(view):
            raise KeyUnwrapError(f"wrapped data keys: {len(view) - offset} trailing bytes")
        return keys
    finally:
        view.release()
