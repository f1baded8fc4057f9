"""Wrap data keys for a host: a fresh transport key to its TPM binding key, the
data keys under the transport key.

Only an :class:`~verifier.evidence.tpm.certify.AuthenticatedBindingKey` is
accepted, so keys are never wrapped to a key the verifier has not seen certified
by the host's AK with the reference-state policy. Deciding *whether* to release
(a fresh affirming verdict) is the key-release gate's job, not this module's.

Format (the agent's ``agent/keyunwrap.py`` reads exactly this; keep them in step):

``encrypted_transport_key``
    RSA-OAEP (MGF1-SHA256, SHA-256, empty label: the TPM convention, under which an
    empty label is used as is and a non-empty one gets a NUL appended) of a fresh
    32-byte AES-256 key, to the binding key; 256 bytes for RSA-2048.

``wrapped_data_keys``
    ``b"WGK1" || nonce (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes)``,
    key = transport key, AAD = ``b"WGK1" || context``. The plaintext is
    ``count (u16 BE)`` then, per key in ascending order of UTF-8 name, no duplicates:
    ``name_len (u8) || name (UTF-8) || key_len (u16 BE) || key``. Bounds:
    1..MAX_KEYS keys, names 1..255 bytes, keys 1..MAX_KEY_BYTES bytes.

``context`` is opaque here: the caller binds host id, manifest digest and lease
id into it, and the agent must present the same bytes to decrypt.

Python cannot guarantee that secrets are erased from memory (``bytes`` are
immutable and may be copied by the interpreter or by OpenSSL's bindings); the
transport key is held in a ``bytearray`` and overwritten after use, which is the
practical best effort.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from verifier.evidence.tpm.certify import AuthenticatedBindingKey

__all__ = [
    "MAGIC",
    "MAX_KEYS",
    "MAX_KEY_BYTES",
    "NONCE_SIZE",
    "TRANSPORT_KEY_SIZE",
    "WrappedKeys",
    "wrap_for_binding_key",
]

MAGIC = b"WGK1"
NONCE_SIZE = 12  # the GCM standard nonce; one message per fresh key, so random is safe
TRANSPORT_KEY_SIZE = 32  # AES-256
# A model's weights are encrypted under a handful of keys (one per shard set);
# the bounds keep a malformed release from turning into a large allocation.
MAX_KEYS = 1024
MAX_KEY_BYTES = 64  # room for AES-256-XTS (two 256-bit keys)
_MAX_NAME_BYTES = 255


@dataclass(frozen=True, slots=True)
class WrappedKeys:
    encrypted_transport_key: bytes  # RSA-OAEP-SHA256 to the binding key
    wrapped_data_keys: bytes  # MAGIC || nonce || AES-256-GCM(ciphertext || tag)


def _encode(data_keys: Mapping[str, bytes]) -> bytearray:
    if not 1 <= len(data_keys) <= MAX_KEYS:
        raise ValueError(f"between 1 and {MAX_KEYS} data keys, got {len(data_keys)}")
    entries = sorted((name.encode("utf-8"), bytes(key)) for name, key in data_keys.items())
    out = bytearray(len(entries).to_bytes(2, "big"))
    for name, key in entries:
        if not 1 <= len(name) <= _MAX_NAME_BYTES:
            raise ValueError(f"data key name of {len(name)} bytes (1..{_MAX_NAME_BYTES})")
        if not 1 <= len(key) <= MAX_KEY_BYTES:
            raise ValueError(f"data key {name!r} of {len(key)} bytes (1..{MAX_KEY_BYTES})")
        out += bytes([len(name)]) + name + len(key).to_bytes(2, "big") + key
    return out


def wrap_for_binding_key(
    key: AuthenticatedBindingKey, data_keys: Mapping[str, bytes], *, context: bytes
) -> WrappedKeys:
    """Wrap ``data_keys`` (name -> key bytes) for the TPM holding ``key``.

    Raises TypeError if ``key`` is not an AuthenticatedBindingKey and ValueError if
    the data keys are outside the format's bounds.
    """
    if not isinstance(key, AuthenticatedBindingKey):
        raise TypeError("keys are wrapped only to an AuthenticatedBindingKey")
    plaintext = _encode(data_keys)
    transport_key = bytearray(secrets.token_bytes(TRANSPORT_KEY_SIZE))
    try:
        encrypted = key.rsa_public_key().encrypt(
            bytes(transport_key),  # the binding takes bytes only: one unavoidable copy
            padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
        )
        nonce = secrets.token_bytes(NONCE_SIZE)
        sealed = AESGCM(transport_key).encrypt(nonce, plaintext, MAGIC + bytes(context))
    finally:
        transport_key[:] = bytes(len(transport_key))
        plaintext[:] = bytes(len(plaintext))
    return WrappedKeys(encrypted_transport_key=encrypted, wrapped_data_keys=MAGIC + nonce + sealed)
