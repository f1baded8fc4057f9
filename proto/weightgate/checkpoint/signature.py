"""Signing and verifying manifest bytes with the verifier's Ed25519 key.

The signature covers ``SIGNING_CONTEXT || manifest_bytes``: the exact canonical bytes,
prefixed with a fixed domain separator so that a signature made by the same key for
some other purpose can never be presented as a manifest signature, and the reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from weightgate.checkpoint.format import ManifestSignatureError
from weightgate.checkpoint.manifest import MAX_MANIFEST_BYTES, Manifest

SIGNING_CONTEXT: Final = b"weightgate.checkpoint.manifest.v1\x00"
SIGNATURE_SIZE: Final = 64  # Ed25519


def signing_input(manifest_bytes: bytes) -> bytes:
    return SIGNING_CONTEXT + manifest_bytes


def sign_manifest(manifest_bytes: bytes, sign: Callable[[bytes], bytes]) -> bytes:
    """Sign with ``sign`` (e.g. ``KeyStore.sign``), after checking the bytes parse.

    Parsing first means the verifier never signs anything a host would then refuse.
    """
    Manifest.from_bytes(manifest_bytes)
    signature = sign(signing_input(manifest_bytes))
    if len(signature) != SIGNATURE_SIZE:
        raise ValueError(f"signer returned {len(signature)} bytes, not an Ed25519 signature")
    return signature


def verify_manifest(
    manifest_bytes: bytes, signature: bytes, public_key: Ed25519PublicKey
) -> Manifest:
    """Authenticate, then parse. Checks, in order:
      1. the manifest is within MAX_MANIFEST_BYTES (before hashing untrusted input);
      2. the signature is 64 bytes;
      3. Ed25519 over SIGNING_CONTEXT || manifest_bytes verifies under ``public_key``
         (the pinned verifier key, never one shipped with the checkpoint);
      4. only then: the strict canonical parse (``Manifest.from_bytes``).
    Raises ManifestSignatureError for 1-3, CheckpointFormatError for 4.
    """
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise ManifestSignatureError(
            f"manifest is {len(manifest_bytes)} bytes, limit {MAX_MANIFEST_BYTES}",
            code="checkpoint.manifest.too_large",
        )
    if len(signature) != SIGNATURE_SIZE:
        raise ManifestSignatureError(
            f"manifest signature is {len(signature)} bytes, expected {SIGNATURE_SIZE}",
            code="checkpoint.manifest.signature_invalid",
        )
    try:
        public_key.verify(bytes(signature), signing_input(bytes(manifest_bytes)))
    except InvalidSignature:
        raise ManifestSignatureError(
            "manifest signature does not verify under the verifier key",
            code="checkpoint.manifest.signature_invalid",
        ) from None
    return Manifest.from_bytes(manifest_bytes)
