"""Verify a TPM signature (TPMT_SIGNATURE) over the exact bytes the TPM signed.

Shared by every kind of TPM attestation (quotes, key certifications): each caller
maps :class:`SignatureCheckError` ``kind`` to its own reason code.
"""

from __future__ import annotations

from typing import Literal, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from verifier.evidence.tpm.keys import PublicKey, verification_key
from verifier.evidence.tpm.parse import TpmPublic, TpmSignature

__all__ = ["SignatureCheckError", "SignatureFailure", "verify_tpm_signature"]

SignatureFailure = Literal["signature_scheme_mismatch", "weak_hash", "signature_invalid"]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_SCHEMES_FOR_KEY = {"rsa": frozenset({"rsassa", "rsapss"}), "ecc": frozenset({"ecdsa"})}

# The hash, padding and signature-algorithm objects are immutable parameters: build
# them once rather than per signature.
_HASH_OBJECTS = {name: algorithm() for name, algorithm in _HASHES.items()}
_PKCS1V15 = padding.PKCS1v15()
# TPMs choose the PSS salt length (the largest, or the digest size since spec 1.16),
# so the verifier must accept any: AUTO.
_PSS = {
    name: padding.PSS(padding.MGF1(algorithm), padding.PSS.AUTO)
    for name, algorithm in _HASH_OBJECTS.items()
}
_ECDSA = {name: ec.ECDSA(algorithm) for name, algorithm in _HASH_OBJECTS.items()}


class SignatureCheckError(Exception):
    """The signature was refused; ``kind`` says why, as a stable token."""

    def __init__(self, kind: SignatureFailure, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: SignatureFailure = kind
        self.detail = detail


def verify_tpm_signature(
    signed: bytes,
    sig: TpmSignature,
    key: TpmPublic,
    *,
    allow_sha1: bool,
    public: PublicKey | None = None,
) -> None:
    """Raise SignatureCheckError unless ``sig`` by ``key`` verifies over ``signed``.

    ``key`` must already be a valid public key (``check_attestation_key`` passed).
    ``public`` is its ``cryptography`` key when the caller already holds it
    (``keys.attestation_public_key``); otherwise it is looked up from ``key``.
    Checks, in order: the scheme suits the key type and the key's fixed scheme and
    hash (``signature_scheme_mismatch``); the hash is not SHA-1 unless
    ``allow_sha1`` (``weak_hash``); the signature verifies over the exact
    ``signed`` bytes (``signature_invalid``).
    """
    if sig.scheme not in _SCHEMES_FOR_KEY.get(key.key_type, frozenset()):
        raise SignatureCheckError(
            "signature_scheme_mismatch", f"{sig.scheme} signature from a {key.key_type} key"
        )
    if key.scheme is not None and key.scheme != sig.scheme:
        raise SignatureCheckError(
            "signature_scheme_mismatch", f"key is fixed to {key.scheme}, signature is {sig.scheme}"
        )
    if key.scheme_hash is not None and key.scheme_hash != sig.hash_algorithm:
        raise SignatureCheckError(
            "signature_scheme_mismatch",
            f"key is fixed to {key.scheme_hash}, signature uses {sig.hash_algorithm}",
        )
    if sig.hash_algorithm == "sha1" and not allow_sha1:
        # SHA-1 collisions are practical; the TPM signs a digest it computed itself,
        # but we do not accept the weaker hash unless the caller opts in.
        raise SignatureCheckError("weak_hash", "signed with SHA-1")
    name = sig.hash_algorithm
    verifier_key = verification_key(key) if public is None else public
    try:
        # key_type decides the key class (keys.public_key builds an RSA key exactly
        # for "rsa"), and the scheme check above tied the scheme to it; a string
        # compare instead of isinstance against the ABC, which costs more.
        if key.key_type == "rsa":
            pad: padding.AsymmetricPadding = _PKCS1V15 if sig.scheme == "rsassa" else _PSS[name]
            cast(rsa.RSAPublicKey, verifier_key).verify(
                sig.signature, signed, pad, _HASH_OBJECTS[name]
            )
        else:
            cast(ec.EllipticCurvePublicKey, verifier_key).verify(
                sig.signature, signed, _ECDSA[name]
            )
    except InvalidSignature:
        # InvalidSignature carries no message; it is the failure, never a flag.
        raise SignatureCheckError(
            "signature_invalid", "signature does not verify under the key"
        ) from None
